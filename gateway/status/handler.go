package status

import (
	"bytes"
	"embed"
	"encoding/json"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
)

//go:embed assets
var assets embed.FS

// pages are the HTML templates: the status page and the login form.
var pages = template.Must(template.New("").Funcs(funcs).ParseFS(assets, "assets/*.html"))

// securityHeaders go on every answer: no caching of admin data, no
// framing, and only the page's own script and style.
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
	"X-Content-Type-Options": "nosniff",
	"Referrer-Policy":        "same-origin",
	"Cache-Control":          "no-store",
	"X-Frame-Options":        "DENY",
}

// Handler serves the status endpoints.
type Handler struct {
	c    *Collector
	auth *Auth
	log  *slog.Logger
}

// NewHandler returns a Handler reporting from c behind auth.
func NewHandler(c *Collector, auth *Auth, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{c: c, auth: auth, log: log}
}

// Register mounts the status endpoints on mux: GET /status, GET
// /status.json, POST /status/login and /status/logout, and the page's
// static script and style under /status/assets/.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /status", withHeaders(h.page))
	mux.HandleFunc("GET /status.json", withHeaders(h.json))
	mux.HandleFunc("POST /status/login", withHeaders(h.auth.login))
	mux.HandleFunc("POST /status/logout", withHeaders(h.auth.logout))
	static, _ := fs.Sub(assets, "assets")
	files := http.StripPrefix("/status/assets/", http.FileServer(http.FS(static)))
	mux.Handle("GET /status/assets/{file}", withHeaders(func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("file") {
		case "status.css", "status.js":
			files.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	}))
}

func withHeaders(f http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for k, v := range securityHeaders {
			w.Header().Set(k, v)
		}
		f(w, r)
	}
}

// page serves the HTML page, or the login form without a session.
func (h *Handler) page(w http.ResponseWriter, r *http.Request) {
	switch h.auth.check(r) {
	case allowed:
	case disabled:
		writeDisabled(w, true)
		return
	case throttled:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many failed attempts; try again shortly", http.StatusTooManyRequests)
		return
	case refused:
		writeLogin(w, http.StatusUnauthorized, "Wrong token.")
		return
	default:
		writeLogin(w, http.StatusUnauthorized, "")
		return
	}
	h.render(w, "page.html", http.StatusOK, h.c.Report(r.Context()))
}

// json serves the report as JSON.
func (h *Handler) json(w http.ResponseWriter, r *http.Request) {
	switch h.auth.check(r) {
	case allowed:
	case disabled:
		writeDisabled(w, false)
		return
	case throttled:
		w.Header().Set("Retry-After", "1")
		writeJSONError(w, http.StatusTooManyRequests, "too many failed attempts; try again shortly")
		return
	default:
		w.Header().Set("WWW-Authenticate", `Bearer realm="relay admin"`)
		writeJSONError(w, http.StatusUnauthorized, "send Authorization: Bearer <admin.token>")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(h.c.Report(r.Context())); err != nil {
		h.log.Debug("status: write json", "error", err)
	}
}

// render executes a template into a buffer first, so that a template
// error is a clean 500 rather than half a page.
func (h *Handler) render(w http.ResponseWriter, name string, code int, data any) {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, data); err != nil {
		h.log.Error("status: render page", "error", err)
		http.Error(w, "status page failed to render", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = buf.WriteTo(w)
}

// writeLogin answers with the login form and an optional message.
func writeLogin(w http.ResponseWriter, code int, msg string) {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, "login.html", msg); err != nil {
		http.Error(w, "login form failed to render", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = buf.WriteTo(w)
}

// writeDisabled explains that admin.token is not set.
func writeDisabled(w http.ResponseWriter, html bool) {
	const msg = "the status page is off: set admin.token in the configuration"
	if html {
		http.Error(w, msg, http.StatusForbidden)
		return
	}
	writeJSONError(w, http.StatusForbidden, msg)
}

// writeJSONError answers {"error": {"message": msg}}.
func writeJSONError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"message": msg}})
}
