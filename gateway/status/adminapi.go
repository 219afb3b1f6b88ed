package status

import (
	"errors"
	"net/http"
)

// AllowAdminAPI authorizes a request to an admin API endpoint (GET
// /admin/usage; the keys API uses CheckBearer itself) by CheckBearer's
// rule: Authorization: Bearer <admin.token>, compared in constant time,
// with failures throttled. When it refuses, it answers as the keys API
// does, with a JSON error (401; 503 without admin.token; 429 when
// throttled), and returns false.
func (a *Auth) AllowAdminAPI(w http.ResponseWriter, r *http.Request) bool {
	switch err := a.CheckBearer(r); {
	case err == nil:
		return true
	case errors.Is(err, ErrAdminDisabled):
		writeJSONError(w, http.StatusServiceUnavailable, err.Error())
	case errors.Is(err, ErrThrottled):
		w.Header().Set("Retry-After", "1")
		writeJSONError(w, http.StatusTooManyRequests, err.Error())
	default:
		w.Header().Set("WWW-Authenticate", `Bearer realm="relay admin"`)
		writeJSONError(w, http.StatusUnauthorized, err.Error())
	}
	return false
}
