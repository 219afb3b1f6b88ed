// Package budgets keeps the relay API keys' budgets: the most a key may
// spend per period, in USD or in tokens, held on one relay or on many.
//
// # Reservations
//
// Before a request is admitted the gateway reserves its worst case
// (Ledger.Reserve: the estimated input plus max_tokens, at the dearest
// upstream model its route may use) and settles the reservation to the
// real usage once the answer is over (Reservation.Settle), or gives it
// back when nothing was sent (Reservation.Cancel). A reservation that
// does not fit what is left is refused (ErrExhausted), so concurrent
// requests cannot overspend: the overshoot is at most what admitted
// requests use beyond their reservations.
//
// # Shared state and chunks
//
// The state of each key's budget for each period (what all relays have
// spent, and the chunk each relay holds) is one record in a Store: on a
// relay, the replicated JetStream KV bucket RELAY_BUDGETS. Admission stays
// local: a relay takes a chunk of what is left by compare-and-set (a
// lease on part of the budget, a quarter of what is free, at least what
// the request needs) and reserves against it in memory. It writes what it
// spent every FlushEvery, renews its chunk, and returns the unused part
// once the key is idle. A chunk left by a relay that stopped renewing it
// (LeaseTTL, then a grace period) is taken back by the others and counted
// as spent: its unreported spending can never exceed it.
//
// # Failing closed
//
// When the store cannot be reached the relay keeps spending the chunk it
// holds, and only it, until the chunk's lease ends; then it refuses
// (ErrUnreachable). It says so in relay_key_budget_fail_closed{key} and
// a log line.
//
// # Periods
//
// day and month follow the UTC calendar; total never resets. Each
// period is its own record, so a new period starts from nothing spent.
package budgets

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/configs"
)

// Errors of Reserve.
var (
	// ErrExhausted: what is left of the key's budget for this period does
	// not cover the request's worst case.
	ErrExhausted = errors.New("budget exhausted")
	// ErrUnreachable: the budget state cannot be reached and the chunk
	// this relay holds does not cover the request (the relay fails closed).
	ErrUnreachable = errors.New("budget state unreachable")
)

// Defaults of Options.
const (
	DefaultFlushEvery = time.Second
	DefaultLeaseTTL   = time.Minute
	// leaseGrace is how long after its expiry a chunk is left alone before
	// another relay takes it back, for clocks that disagree a little.
	leaseGrace = 30 * time.Second
	// idleReturn is how long a key must go without a reservation before
	// this relay gives its unused chunk back.
	idleReturn = 5 * time.Second
	// storeTimeout bounds one round trip to the store.
	storeTimeout = 2 * time.Second
	// rereadEvery is how often an idle key's state is read again, for
	// relay_key_budget_remaining.
	rereadEvery = 5 * time.Second
	// maxConflicts bounds the compare-and-set retries of one sync.
	maxConflicts = 16
)

// Options configure a Ledger.
type Options struct {
	// Store holds the shared state; nil keeps it in memory (one relay).
	Store Store
	// Relay identifies this relay's chunks in the records; "" picks a
	// random id (a restarted relay is a new holder).
	Relay string
	// FlushEvery is how often spending is written and chunks renewed
	// (default DefaultFlushEvery).
	FlushEvery time.Duration
	// LeaseTTL is how long a chunk stays this relay's without a renewal
	// (default DefaultLeaseTTL).
	LeaseTTL time.Duration
	// Registry registers the budget metrics; nil registers none.
	Registry prometheus.Registerer
	// Logger logs failing closed and recovering; nil discards.
	Logger *slog.Logger
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// Cost is a request's cost in both units a budget may be in.
type Cost struct {
	USD    float64
	Tokens int64
}

// Ledger reserves and settles the keys' budgets. It is safe for
// concurrent use; Run writes its state to the store.
type Ledger struct {
	store   Store
	relay   string
	flush   time.Duration
	ttl     time.Duration
	now     func() time.Time
	log     *slog.Logger
	metrics *metrics

	periods atomic.Pointer[periods]

	mu    sync.RWMutex
	accts map[acctKey]*account
}

type acctKey struct{ key, unit, period string }

// account is one key's budget for one period, as this relay holds it.
type account struct {
	acctKey
	storeKey string
	resets   time.Time

	sync sync.Mutex // one round trip to the store at a time

	mu       sync.Mutex
	limit    int64 // in units: micro-USD or tokens
	held     int64 // the chunk on record for this relay
	spent    int64 // settled since the last write
	reserved int64
	expires  time.Time // the chunk's lease
	lastUse  time.Time
	// seenSpent is what every relay had spent at the last read, and
	// seenRead whether there was one.
	seenSpent int64
	seenRead  bool
	lastRead  time.Time
	failing   bool
}

func (a *account) avail() int64 { return a.held - a.spent - a.reserved }

// New returns a Ledger.
func New(o Options) *Ledger {
	if o.Store == nil {
		o.Store = &MemStore{}
	}
	if o.Relay == "" {
		o.Relay = randomID()
	}
	if o.FlushEvery <= 0 {
		o.FlushEvery = DefaultFlushEvery
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Ledger{store: o.Store, relay: o.Relay, flush: o.FlushEvery, ttl: o.LeaseTTL, now: o.Now,
		log: o.Logger, metrics: newMetrics(o.Registry), accts: map[acctKey]*account{}}
}

// unitOf is the unit a budget counts in.
func unitOf(b *configs.Budget) string {
	if b.USD > 0 {
		return "usd"
	}
	return "tokens"
}

// limitOf is a budget's limit in units (micro-USD or tokens).
func limitOf(b *configs.Budget) int64 {
	if b.USD > 0 {
		return int64(math.Round(b.USD * 1e6))
	}
	return b.Tokens
}

// unitsOf is c in b's units, rounded up.
func unitsOf(b *configs.Budget, c Cost) int64 {
	if b.USD > 0 {
		return int64(math.Ceil(max(c.USD, 0) * 1e6))
	}
	return max(c.Tokens, 0)
}

// fromUnits turns units of unit back into USD or tokens.
func fromUnits(unit string, n int64) float64 {
	if unit == "usd" {
		return float64(n) / 1e6
	}
	return float64(n)
}

// Period returns the id of the budget period p holding now (UTC), and
// when it ends (zero for total).
func Period(p string, now time.Time) (id string, resets time.Time) {
	now = now.UTC()
	switch p {
	case configs.BudgetDay:
		d := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
		return "d" + d.Format("20060102"), d.AddDate(0, 0, 1)
	case configs.BudgetMonth:
		m := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
		return "m" + m.Format("200601"), m.AddDate(0, 1, 0)
	default:
		return "total", time.Time{}
	}
}

var plainKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// storeKeyOf is the record's key in the store: the key's name (encoded
// when it holds characters a KV key may not), the unit and the period.
func storeKeyOf(k acctKey) string {
	name := k.key
	if !plainKey.MatchString(name) {
		name = "b64-" + base64.RawURLEncoding.EncodeToString([]byte(name))
	}
	return name + "." + k.unit + "." + k.period
}

// periods caches the ids of the current day and month, which Period
// would format on every reservation.
type periods struct {
	day, month       string
	dayEnd, monthEnd time.Time
}

// period is Period(p, now), from the cache while it holds.
func (l *Ledger) period(p string, now time.Time) (string, time.Time) {
	c := l.periods.Load()
	if c == nil || !now.Before(c.dayEnd) || now.Before(c.dayEnd.AddDate(0, 0, -1)) {
		c = &periods{}
		c.day, c.dayEnd = Period(configs.BudgetDay, now)
		c.month, c.monthEnd = Period(configs.BudgetMonth, now)
		l.periods.Store(c)
	}
	switch p {
	case configs.BudgetDay:
		return c.day, c.dayEnd
	case configs.BudgetMonth:
		return c.month, c.monthEnd
	}
	return "total", time.Time{}
}

// account returns the account of key's budget b for the period holding
// now, with b's current limit.
func (l *Ledger) account(key string, b *configs.Budget, now time.Time) *account {
	period, resets := l.period(b.Period, now)
	k := acctKey{key: key, unit: unitOf(b), period: period}
	l.mu.RLock()
	a := l.accts[k]
	l.mu.RUnlock()
	if a == nil {
		l.mu.Lock()
		if a = l.accts[k]; a == nil {
			a = &account{acctKey: k, storeKey: storeKeyOf(k), resets: resets}
			l.accts[k] = a
			l.metrics.seed(key)
		}
		l.mu.Unlock()
	}
	return a
}

// setLimit gives a the limit of b (a reload may have changed it).
func (a *account) setLimit(b *configs.Budget) {
	a.mu.Lock()
	a.limit = limitOf(b)
	a.mu.Unlock()
}

// Known makes the accounts, and metric series, of keys with budgets
// exist from start-up (their state is read within FlushEvery).
func (l *Ledger) Known(budgets map[string]*configs.Budget) {
	now := l.now()
	for key, b := range budgets {
		if b != nil {
			l.account(key, b, now).setLimit(b)
		}
	}
}

// Reservation is budget set aside for one request. Settle or Cancel it
// exactly once; a nil Reservation (no budget) is fine.
type Reservation struct {
	l      *Ledger
	a      *account
	b      configs.Budget
	amount int64
	once   sync.Once
}

// Reserve sets c aside from key's budget b for the current period. It
// refuses with ErrExhausted when what is left does not cover c, and with
// ErrUnreachable when only the store could say and it cannot be reached.
// It makes a round trip to the store only when this relay's chunk is
// used up. A nil b reserves nothing and returns a nil Reservation.
func (l *Ledger) Reserve(ctx context.Context, key string, b *configs.Budget, c Cost) (*Reservation, error) {
	if b == nil {
		return nil, nil
	}
	now := l.now()
	a := l.account(key, b, now)
	amount, limit := unitsOf(b, c), limitOf(b)
	for try := 0; ; try++ {
		a.mu.Lock()
		a.limit = limit
		if now.Before(a.expires) && a.avail() >= amount {
			a.reserved += amount
			a.lastUse = now
			a.mu.Unlock()
			return &Reservation{l: l, a: a, b: *b, amount: amount}, nil
		}
		a.mu.Unlock()
		if try > 0 {
			l.metrics.refused(key, "exhausted")
			return nil, fmt.Errorf("key %s: %w", key, ErrExhausted)
		}
		if err := l.sync(ctx, a, amount, false); err != nil {
			reason := "exhausted"
			if errors.Is(err, ErrUnreachable) {
				reason = "unreachable"
			}
			l.metrics.refused(key, reason)
			return nil, fmt.Errorf("key %s: %w", key, err)
		}
		now = l.now()
	}
}

// Amount is what r set aside, in USD or tokens.
func (r *Reservation) Amount() float64 {
	if r == nil {
		return 0
	}
	return fromUnits(r.a.unit, r.amount)
}

// Settle replaces the reservation with the request's real cost c (which
// may exceed it: the excess is spent all the same).
func (r *Reservation) Settle(c Cost) {
	if r == nil {
		return
	}
	r.once.Do(func() {
		real := unitsOf(&r.b, c)
		r.a.mu.Lock()
		r.a.reserved -= r.amount
		r.a.spent += real
		r.a.mu.Unlock()
	})
}

// Keep settles the reservation at its full amount: the request's real
// cost is unknown (a stream cut before the upstream said).
func (r *Reservation) Keep() {
	if r == nil {
		return
	}
	r.once.Do(func() {
		r.a.mu.Lock()
		r.a.reserved -= r.amount
		r.a.spent += r.amount
		r.a.mu.Unlock()
	})
}

// SettleAtLeast settles the reservation at c or at its full amount,
// whichever is more: the upstream said what c costs, but the answer was
// cut short and may have cost more.
func (r *Reservation) SettleAtLeast(c Cost) {
	if r == nil {
		return
	}
	r.once.Do(func() {
		real := max(unitsOf(&r.b, c), r.amount)
		r.a.mu.Lock()
		r.a.reserved -= r.amount
		r.a.spent += real
		r.a.mu.Unlock()
	})
}

// Cancel gives the reservation back: nothing was spent.
func (r *Reservation) Cancel() {
	if r == nil {
		return
	}
	r.once.Do(func() {
		r.a.mu.Lock()
		r.a.reserved -= r.amount
		r.a.mu.Unlock()
	})
}

// record is one key's budget for one period in the store.
type record struct {
	// Spent is what every relay has written as spent, chunks taken back
	// from relays that stopped renewing them included.
	Spent int64 `json:"spent"`
	// Leases are the chunks relays hold, by relay id.
	Leases map[string]lease `json:"leases,omitempty"`
}

type lease struct {
	Amount  int64     `json:"amount"`
	Expires time.Time `json:"expires"`
}

// sync writes a's spending, renews its chunk and, when want > 0, takes a
// chunk covering want beyond what is available; giveBack returns the
// unused chunk of an idle account. It returns ErrExhausted when the
// budget cannot cover want, ErrUnreachable when the store fails.
func (l *Ledger) sync(ctx context.Context, a *account, want int64, giveBack bool) error {
	a.sync.Lock()
	defer a.sync.Unlock()
	for range maxConflicts {
		err := l.syncOnce(ctx, a, want, giveBack)
		if !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("%w: %d conflicting writes in a row", ErrUnreachable, maxConflicts)
}

func (l *Ledger) syncOnce(ctx context.Context, a *account, want int64, giveBack bool) error {
	rctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	v, rev, err := l.store.Get(rctx, a.storeKey)
	if err != nil {
		return l.unreachable(a, err)
	}
	var rec record
	if v != nil {
		if err := json.Unmarshal(v, &rec); err != nil {
			return l.unreachable(a, fmt.Errorf("budgets: decode %s: %w", a.storeKey, err))
		}
	}
	if rec.Leases == nil {
		rec.Leases = map[string]lease{}
	}
	now := l.now()

	a.mu.Lock()
	if want > 0 && now.Before(a.expires) && a.avail() >= want {
		a.mu.Unlock()
		return nil // another sync got it meanwhile
	}
	spent, heldSnap, reserved, limit := a.spent, a.held, a.reserved, a.limit
	var ret int64
	if giveBack && reserved == 0 && a.avail() > 0 {
		ret = a.avail()
		a.held -= ret // not to be reserved while it goes back
	}
	renew := a.expires.Sub(now) < l.ttl/2
	a.mu.Unlock()
	undo := func() {
		if ret > 0 {
			a.mu.Lock()
			a.held += ret
			a.mu.Unlock()
		}
	}

	changed := spent != 0 || ret != 0
	for id, ls := range rec.Leases {
		if id != l.relay && now.After(ls.Expires.Add(leaseGrace)) {
			// A relay stopped renewing its chunk: count it as spent, which
			// covers whatever it spent and never wrote.
			rec.Spent += ls.Amount
			delete(rec.Leases, id)
			changed = true
		}
	}
	own, had := rec.Leases[l.relay]
	var base int64 // this relay's chunk after this write, before taking more
	if !had && heldSnap > 0 {
		// Another relay took the chunk back as spent while this one could
		// not renew it: what was spent of it is counted already.
		base = 0
	} else {
		rec.Spent += spent
		base = max(own.Amount-spent-ret, 0)
	}
	var others int64
	for id, ls := range rec.Leases {
		if id != l.relay {
			others += ls.Amount
		}
	}
	free := limit - rec.Spent - others - base
	var take int64
	exhausted := false
	if want > 0 {
		need := want - (base - reserved)
		switch {
		case need <= 0:
		case free < need:
			exhausted = true
		default:
			take = min(free, max(need, free/4))
		}
	}
	newLease := base + take
	if newLease > 0 || reserved > 0 {
		rec.Leases[l.relay] = lease{Amount: newLease, Expires: now.Add(l.ttl)}
		changed = changed || take > 0 || renew || !had
	} else if had {
		delete(rec.Leases, l.relay)
		changed = true
	}
	if changed {
		data, err := json.Marshal(rec)
		if err != nil {
			undo()
			return fmt.Errorf("budgets: encode %s: %w", a.storeKey, err)
		}
		if _, err := l.store.Put(rctx, a.storeKey, data, rev); err != nil {
			undo()
			if errors.Is(err, ErrConflict) {
				return err
			}
			return l.unreachable(a, err)
		}
	}
	a.mu.Lock()
	a.spent -= spent
	a.held = newLease
	if _, ok := rec.Leases[l.relay]; ok {
		a.expires = rec.Leases[l.relay].Expires
	}
	a.seenSpent, a.seenRead, a.lastRead = rec.Spent, true, now
	wasFailing := a.failing
	a.failing = false
	remaining := limit - rec.Spent - a.spent - a.reserved
	a.mu.Unlock()
	l.metrics.state(a.key, fromUnits(a.unit, remaining), false)
	if wasFailing {
		l.log.Info("budget state reachable again", "key", a.key, "period", a.period)
	}
	if exhausted {
		return ErrExhausted
	}
	return nil
}

// unreachable marks a as failing closed and returns err as ErrUnreachable.
func (l *Ledger) unreachable(a *account, err error) error {
	a.mu.Lock()
	was := a.failing
	a.failing = true
	held := a.avail()
	a.mu.Unlock()
	l.metrics.state(a.key, math.NaN(), true)
	if !was {
		l.log.Warn("budget state unreachable: failing closed, spending only the chunk held",
			"key", a.key, "period", a.period, "held", fromUnits(a.unit, max(held, 0)), "error", err)
	}
	return fmt.Errorf("%w: %w", ErrUnreachable, err)
}

// Run writes spending and renews chunks every FlushEvery until ctx ends,
// then gives every unused chunk back.
func (l *Ledger) Run(ctx context.Context) {
	t := time.NewTicker(l.flush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
			l.flushAll(fctx, true)
			cancel()
			return
		case <-t.C:
			l.flushAll(ctx, false)
		}
	}
}

// Flush writes every account's spending now, giving unused chunks back
// when all is true (else only those of idle keys).
func (l *Ledger) Flush(ctx context.Context, all bool) { l.flushAll(ctx, all) }

func (l *Ledger) flushAll(ctx context.Context, all bool) {
	now := l.now()
	l.mu.Lock()
	accts := make([]*account, 0, len(l.accts))
	for _, a := range l.accts {
		accts = append(accts, a)
	}
	l.mu.Unlock()
	for _, a := range accts {
		a.mu.Lock()
		ended := !a.resets.IsZero() && !now.Before(a.resets)
		idle := a.reserved == 0 && now.Sub(a.lastUse) >= idleReturn
		due := a.spent != 0 || !a.seenRead || a.failing || now.Sub(a.lastRead) >= rereadEvery ||
			(a.held > 0 && (idle || ended || a.expires.Sub(now) < l.ttl/2))
		a.mu.Unlock()
		if all || due {
			_ = l.sync(ctx, a, 0, all || idle || ended)
		}
		a.mu.Lock()
		gone := ended && a.held == 0 && a.spent == 0 && a.reserved == 0
		a.mu.Unlock()
		if gone {
			l.mu.Lock()
			delete(l.accts, a.acctKey)
			l.mu.Unlock()
		}
	}
}

// Status is a key's budget for the current period, as Remaining reads it.
type Status struct {
	// Unit is "usd" or "tokens".
	Unit string `json:"unit"`
	// Period is day, month or total; ResetsAt is when it ends (nil for
	// total).
	Period   string     `json:"period"`
	ResetsAt *time.Time `json:"resets_at,omitempty"`
	// Limit, Spent and Remaining are in Unit. Spent counts what every
	// relay has written (within FlushEvery) and this relay's own
	// spending; Remaining also takes off this relay's reservations in
	// flight.
	Limit     float64 `json:"limit"`
	Spent     float64 `json:"spent"`
	Remaining float64 `json:"remaining"`
	// Stale is set when the store could not be read: the figures are the
	// last ones known.
	Stale bool `json:"stale,omitempty"`
}

// Remaining reads key's budget b for the current period from the store.
// A nil b has no status (nil).
func (l *Ledger) Remaining(ctx context.Context, key string, b *configs.Budget) *Status {
	if b == nil {
		return nil
	}
	now := l.now()
	a := l.account(key, b, now)
	a.setLimit(b)
	stale := l.sync(ctx, a, 0, false) != nil
	a.mu.Lock()
	defer a.mu.Unlock()
	spent := a.seenSpent + a.spent
	st := &Status{Unit: a.unit, Period: b.Period, Limit: fromUnits(a.unit, a.limit),
		Spent: fromUnits(a.unit, spent), Remaining: fromUnits(a.unit, max(a.limit-spent-a.reserved, 0)),
		Stale: stale && a.failing}
	if !a.resets.IsZero() {
		r := a.resets
		st.ResetsAt = &r
	}
	return st
}
