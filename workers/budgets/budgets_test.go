package budgets_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/workers/budgets"
)

func TestPeriod(t *testing.T) {
	at := time.Date(2026, 12, 31, 23, 59, 0, 0, time.FixedZone("x", -5*3600)) // 2027-01-01 04:59 UTC
	tests := []struct {
		period, id string
		resets     time.Time
	}{
		{configs.BudgetDay, "d20270101", time.Date(2027, 1, 2, 0, 0, 0, 0, time.UTC)},
		{configs.BudgetMonth, "m202701", time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC)},
		{configs.BudgetTotal, "total", time.Time{}},
	}
	for _, tc := range tests {
		id, resets := budgets.Period(tc.period, at)
		if id != tc.id || !resets.Equal(tc.resets) {
			t.Errorf("Period(%s) = %s, %v; want %s, %v", tc.period, id, resets, tc.id, tc.resets)
		}
	}
}

// clock is a settable clock.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }
func tokens(n int64) budgets.Cost    { return budgets.Cost{Tokens: n} }
func reserve(t *testing.T, l *budgets.Ledger, b *configs.Budget, n int64) (*budgets.Reservation, error) {
	t.Helper()
	return l.Reserve(context.Background(), "k", b, tokens(n))
}

// TestSharedBudget: relays sharing a store never reserve more than the
// budget together, whatever the interleaving; what one returns, another
// can take; a relay that stops renewing its chunk has it taken back as
// spent after its lease and grace.
func TestSharedBudget(t *testing.T) {
	store := &budgets.MemStore{}
	clk := newClock()
	b := &configs.Budget{Tokens: 1000, Period: configs.BudgetDay}
	var ledgers []*budgets.Ledger
	for _, id := range []string{"r1", "r2", "r3"} {
		ledgers = append(ledgers, budgets.New(budgets.Options{Store: store, Relay: id, Now: clk.now, LeaseTTL: time.Minute}))
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		reserved int64
		held     []*budgets.Reservation
	)
	for i := range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := reserve(t, ledgers[i%3], b, 30)
			if err != nil {
				if !errors.Is(err, budgets.ErrExhausted) {
					t.Errorf("Reserve: %v; want nil or ErrExhausted", err)
				}
				return
			}
			mu.Lock()
			reserved += 30
			held = append(held, r)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if reserved > 1000 {
		t.Fatalf("reserved %d of a budget of 1000", reserved)
	}
	if reserved < 1000-3*30*2 {
		t.Errorf("reserved only %d of 1000: chunks held by the others left too much unused", reserved)
	}
	for _, r := range held {
		r.Settle(tokens(10))
	}
	for _, l := range ledgers {
		l.Flush(context.Background(), true)
	}
	st := ledgers[0].Remaining(context.Background(), "k", b)
	if want := float64(len(held)) * 10; st.Spent != want {
		t.Errorf("spent %v; want %v", st.Spent, want)
	}

	// r1 takes a chunk and goes quiet; after its lease and the grace, r2
	// takes it back as spent.
	if _, err := reserve(t, ledgers[0], b, 10); err != nil {
		t.Fatal(err)
	}
	before := ledgers[1].Remaining(context.Background(), "k", b).Spent
	clk.add(2 * time.Minute)
	if _, err := reserve(t, ledgers[1], b, 10); err != nil {
		t.Fatal(err)
	}
	after := ledgers[1].Remaining(context.Background(), "k", b).Spent
	if after <= before {
		t.Errorf("spent %v after r1's chunk expired, %v before; want its chunk counted as spent", after, before)
	}
}

// TestFailClosed: without the store a ledger spends its chunk, then
// refuses with ErrUnreachable, and says so in the metric.
func TestFailClosed(t *testing.T) {
	store := &budgets.MemStore{}
	reg := prometheus.NewRegistry()
	l := budgets.New(budgets.Options{Store: store, Registry: reg})
	b := &configs.Budget{Tokens: 400, Period: configs.BudgetTotal}
	r, err := reserve(t, l, b, 10) // takes a chunk of a quarter: 100
	if err != nil {
		t.Fatal(err)
	}
	r.Settle(tokens(10))
	store.Fail(true)
	n := 0
	for {
		r, err := reserve(t, l, b, 10)
		if err != nil {
			if !errors.Is(err, budgets.ErrUnreachable) {
				t.Fatalf("Reserve: %v; want ErrUnreachable", err)
			}
			break
		}
		r.Settle(tokens(10))
		n++
		if n > 100 {
			t.Fatal("spent past the chunk held")
		}
	}
	if n != 9 {
		t.Errorf("spent %d more reservations from the chunk of 100 (10 used); want 9", n)
	}
	if v := gaugeValue(t, reg, "relay_key_budget_fail_closed"); v != 1 {
		t.Errorf("relay_key_budget_fail_closed = %v; want 1", v)
	}
	store.Fail(false)
	if _, err := reserve(t, l, b, 10); err != nil {
		t.Fatalf("after the store came back: %v", err)
	}
	if v := gaugeValue(t, reg, "relay_key_budget_fail_closed"); v != 0 {
		t.Errorf("relay_key_budget_fail_closed = %v after recovery; want 0", v)
	}
}

// gaugeValue returns the value of the one series of the gauge named name.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no single series of %s", name)
	return 0
}

// TestKVStoreConflict: the JetStream store reports a lost compare-and-set
// as ErrConflict.
func TestKVStoreConflict(t *testing.T) {
	js := natstest.JetStream(t, natstest.Start(t))
	kv, err := js.CreateKeyValue(t.Context(), jetstreamConfig())
	if err != nil {
		t.Fatal(err)
	}
	s := budgets.KVStore{KV: kv}
	rev, err := s.Put(t.Context(), "k", []byte("1"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(t.Context(), "k", []byte("2"), 0); !errors.Is(err, budgets.ErrConflict) {
		t.Errorf("create over an existing record: %v; want ErrConflict", err)
	}
	if _, err := s.Put(t.Context(), "k", []byte("2"), rev+5); !errors.Is(err, budgets.ErrConflict) {
		t.Errorf("update of a stale revision: %v; want ErrConflict", err)
	}
	if v, got, err := s.Get(t.Context(), "k"); err != nil || got != rev || string(v) != "1" {
		t.Errorf("Get = %q, %d, %v; want 1, %d", v, got, err, rev)
	}
	if v, got, err := s.Get(t.Context(), "missing"); err != nil || got != 0 || v != nil {
		t.Errorf("Get(missing) = %q, %d, %v; want nothing", v, got, err)
	}
}
