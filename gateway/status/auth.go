package status

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// How a browser proves it holds the admin token: once, through the login
// form (POST /status/login, the token in the body, never in a URL that
// logs, history and Referer would keep), after which the relay sets a
// session cookie. The cookie is not the token: it is an expiry and an
// HMAC-SHA256 of it keyed by the token, so it is useless elsewhere, ends
// after SessionTTL, and every session ends when the token changes (a
// reload). It is HttpOnly (scripts cannot read it) and SameSite=Strict
// (no other site can make the browser send it), and Secure when the
// page is served over TLS. Scripts and curl send
// "Authorization: Bearer <admin.token>" instead.

const (
	// CookieName is the session cookie's name.
	CookieName = "relay_status"
	// SessionTTL is how long a login lasts.
	SessionTTL = 12 * time.Hour
	// maxLoginBody bounds the login form.
	maxLoginBody = 4 << 10
	sessionLabel = "relay-status-session\x00"
)

// Auth checks the admin token on the status endpoints.
type Auth struct {
	token  func() string
	now    func() time.Time
	failed *rate.Limiter // failed logins and bad bearer tokens
}

// NewAuth returns an Auth for the token token returns now (it may change
// with a reload; "" refuses everything).
func NewAuth(token func() string) *Auth {
	return &Auth{token: token, now: time.Now, failed: rate.NewLimiter(rate.Every(time.Second), 10)}
}

// verdict is the outcome of an authentication check.
type verdict int

const (
	allowed   verdict = iota
	missing           // no credentials: show the login form
	refused           // wrong credentials
	disabled          // no admin.token configured
	throttled         // too many failures
)

// check authenticates r by bearer token or session cookie.
func (a *Auth) check(r *http.Request) verdict {
	token := a.token()
	if token == "" {
		return disabled
	}
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, got, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "bearer") && equalTokens(strings.TrimSpace(got), token) {
			return allowed
		}
		return a.failure()
	}
	if c, err := r.Cookie(CookieName); err == nil {
		if a.validSession(c.Value, token) {
			return allowed
		}
	}
	return missing
}

// Errors of CheckBearer.
var (
	// ErrAdminDisabled: admin.token is not set, so nothing is allowed.
	ErrAdminDisabled = errors.New("the admin API is off: set admin.token in the configuration")
	// ErrBadToken: the bearer token is missing or wrong.
	ErrBadToken = errors.New("missing or wrong admin token: send Authorization: Bearer <admin.token>")
	// ErrThrottled: too many wrong tokens lately.
	ErrThrottled = errors.New("too many failed attempts; try again shortly")
)

// CheckBearer authenticates an API call by its Authorization: Bearer
// header alone (no session cookie: the admin API is for scripts), with
// the same constant-time comparison and the same throttle of failures as
// the status page: nil, ErrAdminDisabled, ErrBadToken or ErrThrottled.
func (a *Auth) CheckBearer(r *http.Request) error {
	token := a.token()
	if token == "" {
		return ErrAdminDisabled
	}
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if ok && strings.EqualFold(scheme, "bearer") && equalTokens(strings.TrimSpace(got), token) {
		return nil
	}
	if a.failure() == throttled {
		return ErrThrottled
	}
	return ErrBadToken
}

// failure counts a failed attempt: refused, or throttled past the budget.
func (a *Auth) failure() verdict {
	if !a.failed.Allow() {
		return throttled
	}
	return refused
}

// equalTokens compares in constant time over SHA-256 digests, so that
// neither the content nor the length of the token leaks through timing.
func equalTokens(got, want string) bool {
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// session returns a session cookie value expiring at exp.
func session(token string, exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	return e + "." + sign(token, e)
}

func sign(token, exp string) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte(sessionLabel + exp))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// validSession checks a cookie value: signed with token, not expired, and
// not claiming to last longer than a login does.
func (a *Auth) validSession(v, token string) bool {
	e, sig, ok := strings.Cut(v, ".")
	if !ok {
		return false
	}
	exp, err := strconv.ParseInt(e, 10, 64)
	if err != nil {
		return false
	}
	now := a.now()
	if exp <= now.Unix() || exp > now.Add(SessionTTL+time.Minute).Unix() {
		return false
	}
	return hmac.Equal([]byte(sig), []byte(sign(token, e)))
}

// sameOrigin refuses cross-site form posts (login CSRF). Browsers send
// Sec-Fetch-Site with every request, which settles it; older ones send
// Origin ("null" from opaque or privacy-restricted contexts, refused).
// Requests with neither (curl, scripts) pass.
func sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "same-origin", "none":
		return true
	case "":
	default:
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

// login handles POST /status/login: the token from the form, then a
// session cookie and a redirect to /status.
func (a *Auth) login(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		http.Error(w, "cross-site login refused", http.StatusForbidden)
		return
	}
	token := a.token()
	if token == "" {
		writeDisabled(w, false)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad login form", http.StatusBadRequest)
		return
	}
	if !equalTokens(r.PostForm.Get("token"), token) {
		if a.failure() == throttled {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "too many failed logins; try again shortly", http.StatusTooManyRequests)
			return
		}
		writeLogin(w, http.StatusUnauthorized, "Wrong token.")
		return
	}
	exp := a.now().Add(SessionTTL)
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: session(token, exp), Path: "/",
		Expires: exp, MaxAge: int(SessionTTL.Seconds()), HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/status", http.StatusSeeOther)
}

// logout handles POST /status/logout: the session cookie is dropped.
func (a *Auth) logout(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		http.Error(w, "cross-site logout refused", http.StatusForbidden)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/status", http.StatusSeeOther)
}
