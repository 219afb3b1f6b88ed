package status

import "net/http"

// AllowAdminAPI authorizes a request to an admin API endpoint other than
// the status page (GET /admin/usage) by the same rule: Authorization:
// Bearer <admin.token>, compared in constant time, or a status page
// session, with failures throttled. When it refuses, it answers with a
// JSON error (401, 403 without admin.token, 429 when throttled) and
// returns false.
func (a *Auth) AllowAdminAPI(w http.ResponseWriter, r *http.Request) bool {
	switch a.check(r) {
	case allowed:
		return true
	case disabled:
		writeJSONError(w, http.StatusForbidden, "the admin API is off: set admin.token in the configuration")
	case throttled:
		w.Header().Set("Retry-After", "1")
		writeJSONError(w, http.StatusTooManyRequests, "too many failed attempts; try again shortly")
	default:
		w.Header().Set("WWW-Authenticate", `Bearer realm="relay admin"`)
		writeJSONError(w, http.StatusUnauthorized, "send Authorization: Bearer <admin.token>")
	}
	return false
}
