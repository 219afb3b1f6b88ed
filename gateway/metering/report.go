package metering

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// The usage API's answers, read from the stored counters (never from
// logs). GET /v1/usage answers a KeyUsage; GET /admin/usage a Report.

// ErrNoStore means the Meter keeps no counters (no NATS).
var ErrNoStore = errors.New("usage counters are not available")

// MaxRangeDays bounds the days one usage query covers.
const MaxRangeDays = 366

// Budget is a key's budget as GET /v1/usage shows it; the budget code
// fills it (gateway.BudgetReporter).
type Budget struct {
	// Unit is "usd" or "tokens".
	Unit string `json:"unit"`
	// Period is day, month or total.
	Period string `json:"period"`
	// Limit is the budget per period.
	Limit float64 `json:"limit"`
	// Spent is what the period has spent so far.
	Spent float64 `json:"spent"`
	// Remaining is Limit minus Spent, at least 0.
	Remaining float64 `json:"remaining"`
	// ResetsAt is when the period ends; absent for total.
	ResetsAt *time.Time `json:"resets_at,omitempty"`
}

// ModelUsage is one upstream model's usage on one day.
type ModelUsage struct {
	// Model is the upstream model.
	Model string `json:"model"`
	Totals
}

// DayUsage is one key's usage on one UTC day.
type DayUsage struct {
	// Date is the UTC day, YYYY-MM-DD.
	Date string `json:"date"`
	// Total sums the day's models.
	Total Totals `json:"total"`
	// Models are the day's usage by upstream model, sorted by model.
	Models []ModelUsage `json:"models"`
}

// KeyUsage is one key's usage over a range of days.
type KeyUsage struct {
	// Object is "usage".
	Object string `json:"object,omitempty"`
	// Key is the key's name.
	Key string `json:"key"`
	// From and To are the first and last UTC days covered (inclusive).
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
	// Total sums the days.
	Total Totals `json:"total"`
	// Days are the days with usage, oldest first.
	Days []DayUsage `json:"days"`
	// Budget is the key's remaining budget; absent when it has none.
	Budget *Budget `json:"budget,omitempty"`
}

// Report is every key's usage over a range of days.
type Report struct {
	// Object is "usage_report".
	Object string `json:"object"`
	// From and To are the first and last UTC days covered (inclusive).
	From string `json:"from"`
	To   string `json:"to"`
	// Total sums every key.
	Total Totals `json:"total"`
	// Keys are the keys with usage, by name.
	Keys []KeyUsage `json:"keys"`
}

// ParseRange reads the from and to query parameters (UTC days,
// YYYY-MM-DD, both inclusive). from defaults to the first day of to's
// month, to to today. The range may not be reversed nor span more than
// MaxRangeDays.
func ParseRange(q url.Values, now time.Time) (from, to time.Time, err error) {
	now = now.UTC()
	to = time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	if v := q.Get("to"); v != "" {
		if to, err = time.Parse(dayFormat, v); err != nil {
			return from, to, fmt.Errorf("to: %q is not a date (YYYY-MM-DD)", v)
		}
	}
	from = time.Date(to.Year(), to.Month(), 1, 0, 0, 0, 0, time.UTC)
	if v := q.Get("from"); v != "" {
		if from, err = time.Parse(dayFormat, v); err != nil {
			return from, to, fmt.Errorf("from: %q is not a date (YYYY-MM-DD)", v)
		}
	}
	switch {
	case from.After(to):
		return from, to, fmt.Errorf("from (%s) is after to (%s)", from.Format(dayFormat), to.Format(dayFormat))
	case days(from, to) > MaxRangeDays:
		return from, to, fmt.Errorf("the range spans more than %d days", MaxRangeDays)
	}
	return from, to, nil
}

// days counts the days from from to to, both included.
func days(from, to time.Time) int { return int(to.Sub(from).Hours()/24) + 1 }

// dayList returns the days from from to to, as written in KV keys.
func dayList(from, to time.Time) []string {
	var out []string
	for d := from; !d.After(to); d = d.AddDate(0, 0, 1) {
		out = append(out, d.Format(dayFormat))
	}
	return out
}

// KeyUsage reads key's usage from from to to (UTC days, inclusive) from
// the stored counters.
func (m *Meter) KeyUsage(ctx context.Context, key string, from, to time.Time) (*KeyUsage, error) {
	if m.store == nil {
		return nil, ErrNoStore
	}
	ku := &KeyUsage{Object: "usage", Key: key, From: from.Format(dayFormat), To: to.Format(dayFormat), Days: []DayUsage{}}
	for _, day := range dayList(from, to) {
		rec, rev, err := readDay(ctx, m.store.kv, entryKey(key, day))
		if err != nil {
			return nil, err
		}
		if rev != 0 {
			ku.addDay(day, rec)
		}
	}
	return ku, nil
}

// addDay adds one day's record to ku.
func (ku *KeyUsage) addDay(day string, rec dayRecord) {
	du := DayUsage{Date: day, Models: make([]ModelUsage, 0, len(rec.Models))}
	for model, t := range rec.Models {
		du.Models = append(du.Models, ModelUsage{Model: model, Totals: *t})
		du.Total.add(*t)
	}
	slices.SortFunc(du.Models, func(a, b ModelUsage) int { return strings.Compare(a.Model, b.Model) })
	ku.Days = append(ku.Days, du)
	ku.Total.add(du.Total)
}

// Usage reads every key's usage from from to to (UTC days, inclusive)
// from the stored counters.
func (m *Meter) Usage(ctx context.Context, from, to time.Time) (*Report, error) {
	if m.store == nil {
		return nil, ErrNoStore
	}
	list := dayList(from, to)
	filters := make([]string, len(list))
	for i, d := range list {
		filters[i] = "*." + d
	}
	lister, err := m.store.kv.ListKeysFiltered(ctx, filters...)
	if err != nil {
		return nil, fmt.Errorf("metering: list counters: %w", err)
	}
	var entries []string
	for k := range lister.Keys() {
		entries = append(entries, k)
	}
	// Sorted by key, then by day: one pass groups them.
	slices.Sort(entries)
	r := &Report{Object: "usage_report", From: list[0], To: list[len(list)-1], Keys: []KeyUsage{}}
	for _, k := range entries {
		key, day, ok := strings.Cut(k, ".")
		if !ok {
			continue
		}
		rec, rev, err := readDay(ctx, m.store.kv, k)
		if err != nil {
			return nil, err
		}
		if rev == 0 {
			continue // expired meanwhile
		}
		if n := len(r.Keys); n == 0 || r.Keys[n-1].Key != key {
			r.Keys = append(r.Keys, KeyUsage{Key: key, Days: []DayUsage{}})
		}
		r.Keys[len(r.Keys)-1].addDay(day, rec)
	}
	for _, ku := range r.Keys {
		r.Total.add(ku.Total)
	}
	return r, nil
}

// AdminHandler serves GET /admin/usage: every key's usage by day and
// model (query: from, to, and key to pick one). allow authorizes the
// request: it answers (and returns false) when it refuses.
func AdminHandler(m *Meter, allow func(w http.ResponseWriter, r *http.Request) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeJSONError(w, http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		if !allow(w, r) {
			return
		}
		from, to, err := ParseRange(r.URL.Query(), time.Now())
		if err != nil {
			writeJSONError(w, http.StatusBadRequest, err.Error())
			return
		}
		rep, err := m.Usage(r.Context(), from, to)
		if err != nil {
			writeJSONError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		if k := r.URL.Query().Get("key"); k != "" {
			keep := rep.Keys[:0]
			rep.Total = Totals{}
			for _, ku := range rep.Keys {
				if ku.Key == k {
					keep = append(keep, ku)
					rep.Total.add(ku.Total)
				}
			}
			rep.Keys = keep
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(rep)
	})
}

// writeJSONError answers {"error":{"type":...,"message":...}}.
func writeJSONError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{
		"type": strings.ReplaceAll(strings.ToLower(http.StatusText(status)), " ", "_"), "message": msg}})
}
