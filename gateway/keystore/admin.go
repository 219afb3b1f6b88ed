package keystore

// This file serves the admin API for keys on admin_listen:
//
//	POST   /admin/keys               create; 201 with the secret, shown once
//	GET    /admin/keys               every key: the file's (read-only) and the API's
//	GET    /admin/keys/{name}        one key
//	PATCH  /admin/keys/{name}        change lanes, routes, limits, budget
//	POST   /admin/keys/{name}/rotate a new secret, shown once; the old one works for a grace period
//	DELETE /admin/keys/{name}        revoke
//
// Every call needs Authorization: Bearer <admin.token>. Bodies are strict
// JSON (an unknown field is an error naming it) of at most maxBody bytes.
// Errors are {"error": {"type", "message"}}. No answer ever holds a
// secret except the one that creates it; no log line ever holds one.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/gateway/status"
)

const (
	// DefaultGrace is how long a rotated secret keeps working when the
	// rotation names no grace.
	DefaultGrace = 24 * time.Hour
	// MaxGrace bounds a rotation's grace period.
	MaxGrace = 7 * 24 * time.Hour
	// SecretPrefix starts every secret the admin API makes.
	SecretPrefix = "rk-"
	// maxNameLen bounds a key name made through the API.
	maxNameLen = 64
	// maxBody bounds an admin request body.
	maxBody = 64 << 10
	// opTimeout bounds one call's store operations.
	opTimeout = 10 * time.Second
)

// Actions counted by relay_admin_key_changes_total.
var actions = []string{"create", "update", "rotate", "revoke"}

// Authorizer checks an admin call's credentials: nil, or why not
// (status.ErrAdminDisabled, status.ErrBadToken, status.ErrThrottled).
// *status.Auth implements it.
type Authorizer interface {
	CheckBearer(r *http.Request) error
}

// AdminOptions are what the admin API needs.
type AdminOptions struct {
	// Store holds the keys made through the API.
	Store *Store
	// Auth checks the admin token.
	Auth Authorizer
	// Config returns the running configuration: its keys are listed
	// (read-only), its lanes and routes bound what a new key may name.
	Config func() *configs.Config
	// Logger logs every change (never a secret); nil discards.
	Logger *slog.Logger
	// Registry registers relay_admin_key_changes_total; nil registers none.
	Registry prometheus.Registerer
}

// Admin serves the admin API for keys.
type Admin struct {
	o       AdminOptions
	log     *slog.Logger
	changes *prometheus.CounterVec
	now     func() time.Time
}

// NewAdmin returns the admin API over o.
func NewAdmin(o AdminOptions) *Admin {
	a := &Admin{o: o, log: o.Logger, now: time.Now}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.changes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_admin_key_changes_total",
		Help: "Keys changed through the admin API, by action (create, update, rotate, revoke).",
	}, []string{"action"})
	for _, act := range actions {
		a.changes.WithLabelValues(act)
	}
	if o.Registry != nil {
		o.Registry.MustRegister(a.changes)
	}
	return a
}

// Register mounts the endpoints on mux.
func (a *Admin) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /admin/keys", a.authorized(a.create))
	mux.HandleFunc("GET /admin/keys", a.authorized(a.list))
	mux.HandleFunc("GET /admin/keys/{name}", a.authorized(a.show))
	mux.HandleFunc("PATCH /admin/keys/{name}", a.authorized(a.patch))
	mux.HandleFunc("POST /admin/keys/{name}/rotate", a.authorized(a.rotate))
	mux.HandleFunc("DELETE /admin/keys/{name}", a.authorized(a.revoke))
}

// apiError is an answer's error: HTTP status, type and message.
type apiError struct {
	status int
	typ    string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, "invalid_request_error", fmt.Sprintf(format, args...)}
}

func notFound(name string) *apiError {
	return &apiError{http.StatusNotFound, "not_found_error", fmt.Sprintf("no key called %q", name)}
}

func conflict(format string, args ...any) *apiError {
	return &apiError{http.StatusConflict, "conflict_error", fmt.Sprintf(format, args...)}
}

// storeError maps a store failure to an answer.
func storeError(err error) *apiError {
	return &apiError{http.StatusServiceUnavailable, "unavailable_error", "key store unavailable: " + err.Error()}
}

// writeJSON answers v with status.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.status, map[string]any{"error": map[string]string{"type": e.typ, "message": e.msg}})
}

// authorized runs h once the admin token checks out.
func (a *Admin) authorized(h func(w http.ResponseWriter, r *http.Request) *apiError) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var e *apiError
		switch err := a.o.Auth.CheckBearer(r); {
		case err == nil:
			e = h(w, r)
		case errors.Is(err, status.ErrAdminDisabled):
			e = &apiError{http.StatusServiceUnavailable, "admin_disabled_error", err.Error()}
		case errors.Is(err, status.ErrThrottled):
			w.Header().Set("Retry-After", "1")
			e = &apiError{http.StatusTooManyRequests, "rate_limit_error", err.Error()}
		default:
			e = &apiError{http.StatusUnauthorized, "authentication_error", err.Error()}
		}
		if e != nil {
			if e.status == http.StatusUnauthorized || e.status == http.StatusTooManyRequests {
				a.log.Warn("admin request refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "status", e.status)
			}
			writeError(w, e)
		}
	}
}

// decode reads r's body, strictly, into v. An empty body leaves v as is
// when emptyOK.
func decode(w http.ResponseWriter, r *http.Request, v any, emptyOK bool) *apiError {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &apiError{http.StatusRequestEntityTooLarge, "request_too_large", fmt.Sprintf("body larger than %d bytes", maxBody)}
		}
		return badRequest("reading body: %v", err)
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		if emptyOK {
			return nil
		}
		return badRequest("body must be a JSON object")
	}
	return decodeStrict(body, v, "")
}

// decodeStrict decodes one JSON object from b into v: unknown fields and
// trailing data are errors, naming the field under prefix.
func decodeStrict(b []byte, v any, prefix string) *apiError {
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te):
			return badRequest("%s%s: must be %s, not %s", prefix, te.Field, typeName(te.Type.String()), te.Value)
		case errors.As(err, &se):
			return badRequest("body is not valid JSON: %v", err)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return badRequest("unknown field %q", prefix+field)
		}
		return badRequest("body is not a valid JSON object: %v", err)
	}
	if d.More() {
		return badRequest("body holds more than one JSON value")
	}
	return nil
}

// typeName names a Go type the way a JSON writer thinks of it.
func typeName(goType string) string {
	switch {
	case strings.Contains(goType, "int"):
		return "an integer"
	case strings.Contains(goType, "float"):
		return "a number"
	case goType == "string":
		return "a string"
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	}
	return "an object"
}

// keyView is a key as the API shows it: never its secret, except Key in
// the one answer that makes the secret (create, rotate).
type keyView struct {
	Name        string   `json:"name"`
	Source      string   `json:"source"` // "config" (read-only) or "api"
	DefaultLane string   `json:"default_lane,omitempty"`
	Lanes       []string `json:"lanes"`
	Routes      []string `json:"routes"`
	configs.KeyLimits
	Budget    *configs.Budget `json:"budget,omitempty"`
	Created   *time.Time      `json:"created,omitempty"`
	Updated   *time.Time      `json:"updated,omitempty"`
	Revoked   bool            `json:"revoked"`
	RevokedAt *time.Time      `json:"revoked_at,omitempty"`
	// PreviousValidUntil is when a rotated secret stops working.
	PreviousValidUntil *time.Time `json:"previous_valid_until,omitempty"`
	// Problems name lanes and routes the key names that the running
	// configuration no longer has (the key just cannot use them).
	Problems []string `json:"problems,omitempty"`
	// Key is the secret: only in create's and rotate's answers.
	Key string `json:"key,omitempty"`
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// configView shows a key of the configuration file.
func configView(k configs.Key) keyView {
	return keyView{Name: k.Name, Source: "config", DefaultLane: k.DefaultLane, Lanes: orEmpty(k.Lanes),
		Routes: orEmpty(k.Routes), KeyLimits: k.KeyLimits, Budget: k.Budget}
}

// recordView shows a stored key, checked against cfg.
func (a *Admin) recordView(r Record, cfg *configs.Config) keyView {
	v := keyView{Name: r.Name, Source: "api", DefaultLane: r.DefaultLane, Lanes: orEmpty(r.Lanes),
		Routes: orEmpty(r.Routes), KeyLimits: r.KeyLimits, Budget: r.Budget, Revoked: r.Revoked}
	created, updated := r.Created, r.Updated
	v.Created, v.Updated = &created, &updated
	if r.Revoked {
		at := r.RevokedAt
		v.RevokedAt = &at
	}
	if _, ok := r.PrevSum(a.now()); ok && !r.Revoked {
		until := r.PrevUntil
		v.PreviousValidUntil = &until
	}
	if cfg != nil && !r.Revoked {
		cfg.CheckKeyAccess(func(field, reason string) {
			v.Problems = append(v.Problems, field+": "+reason+" in the running configuration")
		}, configs.Key{Lanes: r.Lanes, DefaultLane: r.DefaultLane, Routes: r.Routes})
	}
	return v
}

// configKey returns the configuration's key called name.
func configKey(cfg *configs.Config, name string) (configs.Key, bool) {
	if cfg == nil {
		return configs.Key{}, false
	}
	for _, k := range cfg.Keys {
		if k.Name == name {
			return k, true
		}
	}
	return configs.Key{}, false
}

// settings are the fields of a key the API may set.
type settings struct {
	DefaultLane string   `json:"default_lane"`
	Lanes       []string `json:"lanes"`
	Routes      []string `json:"routes"`
	configs.KeyLimits
	Budget *configs.Budget `json:"budget"`
}

// check validates s against cfg, naming every bad field.
func (s settings) check(cfg *configs.Config) *apiError {
	var probs []string
	bad := func(field, reason string) { probs = append(probs, field+": "+reason) }
	if cfg != nil {
		cfg.CheckKeyAccess(bad, configs.Key{Lanes: s.Lanes, DefaultLane: s.DefaultLane, Routes: s.Routes})
	}
	configs.CheckKeyLimits(bad, s.KeyLimits, s.Budget)
	if cfg != nil && s.Budget != nil && s.Budget.USD > 0 && len(cfg.Prices) == 0 {
		// As in the file: with nothing priced, a USD budget could only refuse.
		bad("budget.usd", "needs a prices table in the configuration (or budget in tokens)")
	}
	if len(probs) > 0 {
		return badRequest("%s", strings.Join(probs, "; "))
	}
	return nil
}

// createRequest is POST /admin/keys's body.
type createRequest struct {
	Name string `json:"name"`
	settings
}

// newSecret returns a fresh secret and its SHA-256 in hex.
func newSecret() (string, string, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", "", fmt.Errorf("keystore: secret: %w", err)
	}
	secret := SecretPrefix + base64.RawURLEncoding.EncodeToString(raw)
	sum := sha256.Sum256([]byte(secret))
	return secret, hex.EncodeToString(sum[:]), nil
}

// changed logs and counts one change.
func (a *Admin) changed(r *http.Request, action, name string, attrs ...any) {
	a.changes.WithLabelValues(action).Inc()
	args := append([]any{"who", "admin", "action", action, "key", name, "remote", r.RemoteAddr}, attrs...)
	a.log.Info("admin key change", args...)
}

func (a *Admin) create(w http.ResponseWriter, r *http.Request) *apiError {
	var req createRequest
	if e := decode(w, r, &req, false); e != nil {
		return e
	}
	switch {
	case req.Name == "":
		return badRequest("name: must be set")
	case len(req.Name) > maxNameLen || !configs.ValidKeyName(req.Name):
		return badRequest("name: may only hold letters, digits, _ and - (at most %d)", maxNameLen)
	}
	cfg := a.o.Config()
	if _, ok := configKey(cfg, req.Name); ok {
		return conflict("key %q is defined in the configuration file", req.Name)
	}
	if e := req.check(cfg); e != nil {
		return e
	}
	secret, sum, err := newSecret()
	if err != nil {
		return &apiError{http.StatusInternalServerError, "api_error", err.Error()}
	}
	now := a.now().UTC()
	rec := Record{Name: req.Name, SHA256: sum, DefaultLane: req.DefaultLane, Lanes: req.Lanes, Routes: req.Routes,
		KeyLimits: req.KeyLimits, Budget: req.Budget, Created: now, Updated: now}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	rev, err := a.o.Store.Create(ctx, rec)
	if err != nil {
		if errors.Is(err, ErrExists) {
			return conflict("key %q exists (a revoked key's name is not reused)", req.Name)
		}
		return storeError(err)
	}
	a.inForce(ctx, rev)
	a.changed(r, "create", rec.Name)
	v := a.recordView(rec, cfg)
	v.Key = secret
	writeJSON(w, http.StatusCreated, v)
	return nil
}

func (a *Admin) list(w http.ResponseWriter, r *http.Request) *apiError {
	cfg := a.o.Config()
	out := []keyView{}
	if cfg != nil {
		for _, k := range cfg.Keys {
			out = append(out, configView(k))
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	recs, err := a.o.Store.List(ctx)
	if err != nil {
		return storeError(err)
	}
	for _, rec := range recs {
		if _, shadowed := configKey(cfg, rec.Name); !shadowed {
			out = append(out, a.recordView(rec, cfg))
		}
	}
	slices.SortStableFunc(out, func(x, y keyView) int { return strings.Compare(x.Name, y.Name) })
	writeJSON(w, http.StatusOK, map[string]any{"data": out})
	return nil
}

func (a *Admin) show(w http.ResponseWriter, r *http.Request) *apiError {
	name := r.PathValue("name")
	cfg := a.o.Config()
	if k, ok := configKey(cfg, name); ok {
		writeJSON(w, http.StatusOK, configView(k))
		return nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	rec, _, err := a.o.Store.Get(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return notFound(name)
	}
	if err != nil {
		return storeError(err)
	}
	writeJSON(w, http.StatusOK, a.recordView(rec, cfg))
	return nil
}

// patchRequest is PATCH /admin/keys/{name}'s body: a field left out is
// unchanged; "budget": null removes the budget.
type patchRequest struct {
	DefaultLane    *string         `json:"default_lane"`
	Lanes          *[]string       `json:"lanes"`
	Routes         *[]string       `json:"routes"`
	RPM            *int            `json:"rpm"`
	InputTPM       *int            `json:"input_tpm"`
	OutputTPM      *int            `json:"output_tpm"`
	MaxConcurrency *int            `json:"max_concurrency"`
	Budget         json.RawMessage `json:"budget"`
}

// apply sets p's fields on s.
func (p patchRequest) apply(s *settings) *apiError {
	set := func(dst *int, v *int) {
		if v != nil {
			*dst = *v
		}
	}
	if p.DefaultLane != nil {
		s.DefaultLane = *p.DefaultLane
	}
	if p.Lanes != nil {
		s.Lanes = *p.Lanes
	}
	if p.Routes != nil {
		s.Routes = *p.Routes
	}
	set(&s.RPM, p.RPM)
	set(&s.InputTPM, p.InputTPM)
	set(&s.OutputTPM, p.OutputTPM)
	set(&s.MaxConcurrency, p.MaxConcurrency)
	switch {
	case p.Budget == nil:
	case string(p.Budget) == "null":
		s.Budget = nil
	default:
		var b configs.Budget
		if e := decodeStrict(p.Budget, &b, "budget."); e != nil {
			return e
		}
		s.Budget = &b
	}
	return nil
}

// mutable loads the stored key called name for a change: 404 when there
// is none, 409 when it is the file's.
func (a *Admin) mutable(name string, cfg *configs.Config) *apiError {
	if _, ok := configKey(cfg, name); ok {
		return conflict("key %q is defined in the configuration file and is read-only here; change it there", name)
	}
	return nil
}

// inForce waits, briefly, until this relay's own key table holds the
// write at revision rev, so that a key created, rotated or revoked here
// works (or is refused) here as soon as the answer arrives; other relays
// follow within a second. The write is stored either way: past the wait
// it is answered and applied when the watch catches up.
func (a *Admin) inForce(ctx context.Context, rev uint64) {
	ctx, cancel := context.WithTimeout(ctx, inForceWait)
	defer cancel()
	if err := a.o.Store.WaitApplied(ctx, rev); err != nil {
		a.log.Warn("admin change stored but not yet in force on this relay", "error", err.Error())
	}
}

// inForceWait bounds inForce.
const inForceWait = 2 * time.Second

// update applies change to the stored key called name and maps the
// store's errors to answers.
func (a *Admin) update(ctx context.Context, name string, change func(*Record) error) (Record, *apiError) {
	rec, rev, err := a.o.Store.Update(ctx, name, change)
	var ae *apiError
	switch {
	case err == nil:
		a.inForce(ctx, rev)
		return rec, nil
	case errors.Is(err, ErrNotFound):
		return rec, notFound(name)
	case errors.Is(err, ErrRevoked):
		return rec, conflict("key %q is revoked", name)
	case errors.As(err, &ae):
		return rec, ae
	}
	return rec, storeError(err)
}

func (a *Admin) patch(w http.ResponseWriter, r *http.Request) *apiError {
	name := r.PathValue("name")
	cfg := a.o.Config()
	if e := a.mutable(name, cfg); e != nil {
		return e
	}
	var req patchRequest
	if e := decode(w, r, &req, false); e != nil {
		return e
	}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	rec, e := a.update(ctx, name, func(rec *Record) error {
		if rec.Revoked {
			return ErrRevoked
		}
		s := settings{DefaultLane: rec.DefaultLane, Lanes: rec.Lanes, Routes: rec.Routes, KeyLimits: rec.KeyLimits, Budget: rec.Budget}
		if e := req.apply(&s); e != nil {
			return e
		}
		if e := s.check(cfg); e != nil {
			return e
		}
		rec.DefaultLane, rec.Lanes, rec.Routes, rec.KeyLimits, rec.Budget = s.DefaultLane, s.Lanes, s.Routes, s.KeyLimits, s.Budget
		rec.Updated = a.now().UTC()
		return nil
	})
	if e != nil {
		return e
	}
	a.changed(r, "update", name)
	writeJSON(w, http.StatusOK, a.recordView(rec, cfg))
	return nil
}

// rotateRequest is POST /admin/keys/{name}/rotate's optional body.
type rotateRequest struct {
	// Grace is how long the old secret keeps working (Go duration,
	// "0s" to end it at once); default DefaultGrace, at most MaxGrace.
	Grace *string `json:"grace"`
}

func (a *Admin) rotate(w http.ResponseWriter, r *http.Request) *apiError {
	name := r.PathValue("name")
	cfg := a.o.Config()
	if e := a.mutable(name, cfg); e != nil {
		return e
	}
	var req rotateRequest
	if e := decode(w, r, &req, true); e != nil {
		return e
	}
	grace := DefaultGrace
	if req.Grace != nil {
		d, err := time.ParseDuration(*req.Grace)
		switch {
		case err != nil:
			return badRequest("grace: %q is not a duration (e.g. \"24h\")", *req.Grace)
		case d < 0 || d > MaxGrace:
			return badRequest("grace: must be between 0s and %s", MaxGrace)
		}
		grace = d
	}
	secret, sum, err := newSecret()
	if err != nil {
		return &apiError{http.StatusInternalServerError, "api_error", err.Error()}
	}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	rec, e := a.update(ctx, name, func(rec *Record) error {
		if rec.Revoked {
			return ErrRevoked
		}
		now := a.now().UTC()
		rec.PrevSHA256, rec.PrevUntil = "", time.Time{}
		if grace > 0 {
			rec.PrevSHA256, rec.PrevUntil = rec.SHA256, now.Add(grace)
		}
		rec.SHA256, rec.Updated = sum, now
		return nil
	})
	if e != nil {
		return e
	}
	a.changed(r, "rotate", name, "grace_s", grace.Seconds())
	v := a.recordView(rec, cfg)
	v.Key = secret
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (a *Admin) revoke(w http.ResponseWriter, r *http.Request) *apiError {
	name := r.PathValue("name")
	cfg := a.o.Config()
	if e := a.mutable(name, cfg); e != nil {
		return e
	}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	already := false
	rec, e := a.update(ctx, name, func(rec *Record) error {
		if rec.Revoked {
			already = true
			return nil
		}
		now := a.now().UTC()
		rec.Revoked, rec.RevokedAt, rec.Updated = true, now, now
		rec.PrevSHA256, rec.PrevUntil = "", time.Time{}
		return nil
	})
	if e != nil {
		return e
	}
	if !already {
		a.changed(r, "revoke", name)
	}
	writeJSON(w, http.StatusOK, a.recordView(rec, cfg))
	return nil
}
