package gateway

// This file owns a request's admission by its key (SPEC §2 keys[],
// §3 errors): the key's own limits (package workers/keylimits), taken
// together with a provider's capacity or not at all, and its budget
// (package workers/budgets), reserved at the worst case before admission
// and settled to the real usage when the answer is over. Synchronous
// requests, jobs and batch items all go through it.

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/gateway/metering"
	"github.com/relaygw/relay/lanes"
	"github.com/relaygw/relay/workers"
	"github.com/relaygw/relay/workers/actor"
	"github.com/relaygw/relay/workers/budgets"
	"github.com/relaygw/relay/workers/keylimits"
	"github.com/relaygw/relay/workers/pricing"
	"github.com/relaygw/relay/workers/wire"
)

// Quotas enforces the keys' limits and budgets. One serves the gateway
// (Deps.Quotas) and its JobRunner, and outlives reloads: Server.SetConfig
// hands it the keys and prices. A nil *Quotas enforces nothing.
type Quotas struct {
	// Limits holds the keys' limiters; nil enforces no per-key limit.
	Limits *keylimits.Limiter
	// Budgets holds the keys' budgets; nil enforces no budget.
	Budgets *budgets.Ledger
	// Lookup, when set, finds keys the configuration does not hold (keys
	// made at run time), for jobs, which carry only their key's name.
	Lookup func(name string) (Key, bool)

	cfg atomic.Pointer[quotaConfig]
	// kick tells the lanes a key's capacity freed (Server.New sets it).
	kick func()
}

// quotaConfig is what a configuration tells Quotas.
type quotaConfig struct {
	keys   map[string]*Key
	prices *pricing.Table
	// rates caches, by client model, the prices of the upstream models it
	// may be sent to ([]pricing.Price), up to maxCachedRates models (a
	// pattern route passes any model through).
	rates  sync.Map
	cached atomic.Int64
}

// maxCachedRates bounds quotaConfig.rates.
const maxCachedRates = 4096

// ratesFor returns the prices of the upstream models d may send model to.
func (qc *quotaConfig) ratesFor(d upstreamModeler, model string) []pricing.Price {
	if v, ok := qc.rates.Load(model); ok {
		return v.([]pricing.Price)
	}
	var out []pricing.Price
	for _, m := range d.UpstreamModels(model) {
		if p, ok := qc.prices.Lookup(m); ok {
			out = append(out, p)
		}
	}
	if qc.cached.Add(1) <= maxCachedRates {
		qc.rates.Store(model, out)
	}
	return out
}

// setConfig takes the keys and prices of cfg.
func (q *Quotas) setConfig(cfg Config) {
	if q == nil {
		return
	}
	qc := &quotaConfig{keys: make(map[string]*Key, len(cfg.Keys)), prices: cfg.Prices}
	known := map[string]*configs.Budget{}
	for i := range cfg.Keys {
		k := &cfg.Keys[i]
		qc.keys[k.Name] = k
		if k.Budget != nil {
			known[k.Name] = k.Budget
		}
	}
	q.cfg.Store(qc)
	if q.Budgets != nil {
		q.Budgets.Known(known)
	}
	// The keys' limiters are kept: a key's buckets survive a reload, and
	// keys made at run time are not in cfg.
}

// Key returns the key named name as the last configuration had it, else
// as Lookup finds it.
func (q *Quotas) Key(name string) (Key, bool) {
	if q == nil {
		return Key{}, false
	}
	if qc := q.cfg.Load(); qc != nil && qc.keys[name] != nil {
		return *qc.keys[name], true
	}
	if q.Lookup != nil {
		return q.Lookup(name)
	}
	return Key{}, false
}

// Remaining reads what is left of the budget of the key named name (nil
// when it has none), for GET /v1/usage.
func (q *Quotas) Remaining(ctx context.Context, name string) *budgets.Status {
	k, ok := q.Key(name)
	if !ok || k.Budget == nil || q.Budgets == nil {
		return nil
	}
	return q.Budgets.Remaining(ctx, name, k.Budget)
}

// upstreamModeler names the upstream models a client's model may be
// sent to (*workers.Router).
type upstreamModeler interface {
	UpstreamModels(model string) []string
}

// gate is one request's admission by its key. The zero gate (no key
// limits, no budget) admits by the providers alone.
type gate struct {
	q       *Quotas
	key     string
	limits  configs.KeyLimits
	limited bool
	in      int // the estimated input tokens
	maxOut  int
	permit  *keylimits.Permit
	budget  *budgets.Reservation
	batch   bool
	// called reports that the upstream was called (or a job started).
	called bool
}

// newGate returns the gate of a request of key k for model with body and
// fields, or nil when the key has neither limits nor a budget.
func (q *Quotas) newGate(k *Key, body []byte, f wire.Fields) *gate {
	if q == nil {
		return nil
	}
	limited := q.Limits != nil && keylimits.Limited(k.Limits)
	budgeted := q.Budgets != nil && k.Budget != nil
	if !limited && !budgeted {
		return nil
	}
	maxOut := f.MaxTokens
	if maxOut <= 0 {
		maxOut = actor.DefaultMaxOutput
	}
	return &gate{q: q, key: k.Name, limits: k.Limits, limited: limited,
		in: wire.EstimateInputTokens(body), maxOut: maxOut}
}

// worstCost is the request's worst case: its estimated input and its
// max_tokens, at the dearest upstream model d may send it to.
func (g *gate) worstCost(d any, model string) budgets.Cost {
	c := budgets.Cost{Tokens: int64(g.in + g.maxOut)}
	qc := g.q.cfg.Load()
	um, ok := d.(upstreamModeler)
	if qc == nil || !ok {
		return c
	}
	u := pricing.Usage{Input: int64(g.in), Output: int64(g.maxOut)}
	for _, p := range qc.ratesFor(um, model) {
		c.USD = max(c.USD, p.Cost(u, g.batch))
	}
	return c
}

// reserve sets the request's worst case aside from the key's budget b.
func (g *gate) reserve(ctx context.Context, b *configs.Budget, d any, model string) error {
	if g == nil || b == nil || g.q.Budgets == nil {
		return nil
	}
	r, err := g.q.Budgets.Reserve(ctx, g.key, b, g.worstCost(d, model))
	if err != nil {
		return err
	}
	g.budget = r
	return nil
}

// takeKey takes the key's capacity unless the gate holds it already (a
// request back on its lane after upstream 429s), and reports whether it
// took it now. A refusal is a *keylimits.Refusal.
func (g *gate) takeKey() (took bool, err error) {
	if g.permit != nil {
		return false, nil
	}
	p, err := g.q.Limits.Admit(g.key, g.limits, g.in, g.maxOut)
	if err != nil {
		return false, err
	}
	g.permit = p
	return true, nil
}

// giveBack undoes what takeKey took now, when no provider admitted.
func (g *gate) giveBack(took bool) {
	if took {
		g.permit.Undo()
		g.permit = nil
	}
}

// admit takes the key's capacity and then a provider's from a: both or
// neither. A refusal by the key's limits is a *keylimits.Refusal.
func (g *gate) admit(a workers.Admitter, req *workers.Request) (*workers.Grant, error) {
	if g == nil || !g.limited {
		return a.Admit(req)
	}
	took, err := g.takeKey()
	if err != nil {
		return nil, err
	}
	gr, err := a.Admit(req)
	if err != nil {
		g.giveBack(took)
	}
	return gr, err
}

// admitKey takes the key's capacity alone (no lanes: Do admits the
// provider).
func (g *gate) admitKey() error {
	if g == nil || !g.limited {
		return nil
	}
	_, err := g.takeKey()
	return err
}

// admitFunc is admitFunc (admit.go) through the gate: the key's
// capacity, then a provider's, both or neither.
func (g *gate) admitFunc(a workers.Admitter, req *workers.Request) lanes.AdmitFunc {
	if g == nil || !g.limited {
		return admitFunc(a, req)
	}
	return func() (lanes.Grant, time.Time, bool) {
		took, err := g.takeKey()
		if err != nil {
			var kr *keylimits.Refusal
			if errors.As(err, &kr) {
				return nil, kr.When, false
			}
			return nil, time.Time{}, false
		}
		gr, retryAt, ok := workers.TryAdmit(a, req)
		if !ok {
			g.giveBack(took)
			return nil, retryAt, false
		}
		return gr, time.Time{}, true
	}
}

// keyHold is the lanes' Waiter.KeyHold: whether the key's limits refuse
// the request now. Nil when the key has no limits.
func (g *gate) keyHold() func() (bool, time.Time) {
	if g == nil || !g.limited {
		return nil
	}
	return func() (bool, time.Time) {
		if g.permit != nil {
			return false, time.Time{}
		}
		return g.q.Limits.Hold(g.key, g.limits, g.in, g.maxOut)
	}
}

// keyWait estimates how long the key's limits hold the request with
// ahead of its requests parked before it.
func (g *gate) keyWait(ahead int) time.Duration {
	if g == nil || !g.limited || g.permit != nil {
		return 0
	}
	return g.q.Limits.Wait(g.key, g.limits, ahead, g.in, g.maxOut)
}

// settle ends the request's hold on its key: the key's buckets and budget
// take the real usage u of upstream model (known: stated by the
// upstream). answered reports an upstream answer went out; cut, that it
// was cut before its end (a stream whose client left or whose upstream
// broke), so its real cost may exceed what the upstream said.
func (g *gate) settle(u wire.Usage, model string, answered, cut bool) {
	if g == nil {
		return
	}
	switch {
	case u.Known:
		g.permit.Done(u.Input, u.Output, true)
	case g.called:
		// Called, but no usage known: keep the token charges when an
		// answer went out, else nothing was generated.
		if answered {
			g.permit.Done(0, 0, false)
		} else {
			g.permit.Done(0, 0, true)
		}
	default:
		g.permit.Undo()
	}
	if g.permit != nil && g.q.kick != nil {
		g.q.kick()
	}
	g.permit = nil
	if g.budget == nil {
		return
	}
	switch {
	case u.Known && !cut:
		g.budget.Settle(g.cost(u, model))
	case u.Known || answered:
		// Cut short, or answered without usage: the upstream may have
		// generated more than it said; keep the worst case, or what it
		// said when that is more.
		g.budget.SettleAtLeast(g.cost(u, model))
	default:
		g.budget.Cancel()
	}
	g.budget = nil
}

// cost is the real cost of usage u on upstream model.
func (g *gate) cost(u wire.Usage, model string) budgets.Cost {
	c := budgets.Cost{Tokens: int64(u.Input + u.Output)}
	if qc := g.q.cfg.Load(); qc != nil {
		c.USD, _ = qc.prices.Cost(model, pricing.Of(u), g.batch)
	}
	return c
}

// keyLimitError answers a request whose key's limits hold it longer than
// its wait: 429 with retry-after.
func keyLimitError(key string, wait time.Duration, a *about) *apiError {
	e := newError(kindRateLimited, "key "+strconv.Quote(key)+" is over its own rate limits for longer than this request may wait ("+
		a.lane.MaxWait.String()+"); retry after the time given")
	e.retryAfter = max(wait, time.Second)
	return e
}

// keyRefusalError answers a request refused by its key's limits where it
// cannot wait (no lanes).
func keyRefusalError(kr *keylimits.Refusal) *apiError {
	e := newError(kindRateLimited, "key "+strconv.Quote(kr.Key)+" is over its "+string(kr.Reason)+" limit; retry after the time given")
	e.retryAfter = max(time.Until(kr.When), time.Second)
	return e
}

// budgetError answers a request its key's budget refused: 429 with
// x-should-retry: false and no retry-after for an exhausted budget
// (insufficient_quota for OpenAI clients), 503 with retry-after when the
// budget state cannot be reached.
func budgetError(key string, b *configs.Budget, err error) *apiError {
	if errors.Is(err, budgets.ErrUnreachable) {
		e := newError(kindStoreUnavailable, "the budget of key "+strconv.Quote(key)+
			" cannot be checked now (its state is unreachable); retry later")
		e.cause = err
		return e
	}
	e := newError(kindBudget, "key "+strconv.Quote(key)+" has used its "+budgetName(b)+
		" budget (what is left does not cover this request's max_tokens); it renews "+renews(b))
	e.noRetry = true
	e.cause = err
	return e
}

// budgetName says which budget, as in "its daily budget of $10.00".
func budgetName(b *configs.Budget) string {
	amount := strconv.FormatInt(b.Tokens, 10) + " tokens"
	if b.USD > 0 {
		amount = "$" + strconv.FormatFloat(b.USD, 'f', 2, 64)
	}
	switch b.Period {
	case configs.BudgetDay:
		return "daily " + amount
	case configs.BudgetMonth:
		return "monthly " + amount
	}
	return "total " + amount
}

// renews says when a budget renews.
func renews(b *configs.Budget) string {
	switch b.Period {
	case configs.BudgetDay:
		return "at midnight UTC"
	case configs.BudgetMonth:
		return "on the first of the month (UTC)"
	}
	return "never (a total budget)"
}

// kicker is a Parker that can be told capacity freed (*lanes.Set).
type kicker interface{ Kick() }

// keyCounter is a Parker that counts a key's parked requests
// (*lanes.Set).
type keyCounter interface{ KeyParked(key string) int }

// budgetSpent refuses a job or message batch at submission when what is
// left of its key's budget for the current period, with nothing reserved,
// cannot cover it: it could only fail. A job is judged by its worst case
// (body and fields; a nil body, a batch, by nothing: refused once the
// budget is spent). A budget that cannot be read lets it through (it is
// checked again when it runs).
func (s *Server) budgetSpent(ctx context.Context, st *state, k *key, body []byte, f wire.Fields) *apiError {
	if s.quotas == nil || s.quotas.Budgets == nil || k.Budget == nil {
		return nil
	}
	bs := s.quotas.Budgets.Remaining(ctx, k.Name, k.Budget)
	if bs == nil || bs.Stale {
		return nil
	}
	need := 0.0
	if body != nil {
		c := s.quotas.newGate(&k.Key, body, f).worstCost(st.dispatcher, f.Model)
		need = float64(c.Tokens)
		if bs.Unit == "usd" {
			need = c.USD
		}
	}
	if left := bs.Limit - bs.Spent; left > 0 && left >= need {
		return nil
	}
	return budgetError(k.Name, k.Budget, budgets.ErrExhausted)
}

// RemainingBudget implements BudgetReporter for GET /v1/usage: the
// budget of the key called name with what is spent and left, or nil
// when it has none.
func (q *Quotas) RemainingBudget(ctx context.Context, name string) (*metering.Budget, error) {
	st := q.Remaining(ctx, name)
	if st == nil {
		return nil, nil
	}
	return &metering.Budget{Unit: st.Unit, Period: st.Period, Limit: st.Limit, Spent: st.Spent,
		Remaining: st.Remaining, ResetsAt: st.ResetsAt}, nil
}

var _ BudgetReporter = (*Quotas)(nil)
