package gateway_test

// Per-key limits and budgets (gateway/quota.go) end to end: keys over
// their limits wait on their lane while their neighbours do not, or get
// 429 with retry-after when their wait is too short; budgets reserved at
// the worst case never let concurrent requests overspend, on one relay
// or three sharing a JetStream cluster, and a relay cut off from the
// budget state spends only the chunk it holds.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/gateway"
	"github.com/relaygw/relay/lanes/assets"
	"github.com/relaygw/relay/workers/actor"
	"github.com/relaygw/relay/workers/budgets"
	"github.com/relaygw/relay/workers/keylimits"
	"github.com/relaygw/relay/workers/pricing"
	"github.com/relaygw/relay/workers/simupstream"
	"github.com/relaygw/relay/workers/wire"
)

// Secrets of the keys of these tests.
const (
	slowSecret   = "relay-slow-key-0c41"
	fastSecret   = "relay-fast-key-9e02"
	budgetSecret = "relay-budget-key-77aa"
)

// budgetPrices prices the default routes' upstream models.
var budgetPrices = pricing.New([]configs.Price{
	{Model: "claude-sonnet-4-5", Input: 3, Output: 15},
	{Model: "gpt-4o-2024", Input: 2.5, Output: 10},
})

// newQuotas returns Quotas with a limiter and a ledger over store (nil:
// in memory).
func newQuotas(store budgets.Store) (*gateway.Quotas, *budgets.Ledger) {
	l := budgets.New(budgets.Options{Store: store})
	return &gateway.Quotas{Limits: keylimits.New(keylimits.Options{}), Budgets: l}, l
}

// messageBody is a Messages (or Chat Completions) body for model with
// max_tokens.
func messageBody(model string, maxTokens int, text string) string {
	return fmt.Sprintf(`{"model":%q,"max_tokens":%d,"messages":[{"role":"user","content":%q}]}`, model, maxTokens, text)
}

// TestKeyLimitWaitsNeighboursDoNot: on a route whose provider is
// saturated (one slot), a key over its rpm waits its turn on the lane,
// while another key's requests are served as the provider frees.
func TestKeyLimitWaitsNeighboursDoNot(t *testing.T) {
	slow := key("slow", slowSecret, "interactive", []string{"interactive"}, "*")
	slow.Limits = configs.KeyLimits{RPM: 60} // one request at once, then one a second
	fast := key("fast", fastSecret, "interactive", []string{"interactive"}, "*")
	q, _ := newQuotas(nil)
	r := newRelay(t, withLanes(100), withKeys(slow, fast), withQuotas(q, budgetPrices),
		withActors(map[string]actor.Options{"anthropic-a": {MaxConcurrency: 1}}),
		withUpstreams(simupstream.Options{Latency: 50 * time.Millisecond}))

	const n = 4
	type done struct {
		key    string
		status int
		at     time.Time
	}
	results := make(chan done, 2*n)
	var wg sync.WaitGroup
	send := func(name, secret string) {
		defer wg.Done()
		st, _, _ := r.do(t, http.MethodPost, "/v1/messages", anthropicHeaders(secret), messageBody("claude-sonnet", 16, "hi"))
		results <- done{name, st, time.Now()}
	}
	start := time.Now()
	for range n {
		wg.Add(1)
		go send("slow", slowSecret)
	}
	for range n {
		wg.Add(1)
		go send("fast", fastSecret)
	}
	wg.Wait()
	close(results)
	var lastFast, lastSlow time.Time
	for d := range results {
		if d.status != http.StatusOK {
			t.Fatalf("key %s: status %d; want 200", d.key, d.status)
		}
		if d.key == "fast" && d.at.After(lastFast) {
			lastFast = d.at
		}
		if d.key == "slow" && d.at.After(lastSlow) {
			lastSlow = d.at
		}
	}
	// The slow key's four requests need three refills of one a second.
	if took := lastSlow.Sub(start); took < 2500*time.Millisecond {
		t.Errorf("the slow key's %d requests were all served after %v; its rpm of 60 allows one a second", n, took)
	}
	if !lastFast.Before(lastSlow) {
		t.Errorf("the fast key's last request ended at +%v, after the slow key's last (+%v): it waited behind the slow key",
			lastFast.Sub(start), lastSlow.Sub(start))
	}
}

// TestKeyLimitShortWait429: a key over its limit for longer than the
// request may wait (x-relay-max-wait) gets 429 with retry-after at once,
// in the caller's format.
func TestKeyLimitShortWait429(t *testing.T) {
	k := key("slow", slowSecret, "interactive", []string{"interactive"}, "*")
	k.Limits = configs.KeyLimits{RPM: 1}
	q, _ := newQuotas(nil)
	r := newRelay(t, withLanes(100), withKeys(k), withQuotas(q, budgetPrices))
	if st, _, b := r.do(t, http.MethodPost, "/v1/messages", anthropicHeaders(slowSecret), messageBody("claude-sonnet", 16, "first")); st != http.StatusOK {
		t.Fatalf("first request: %d %s", st, b)
	}
	tests := []struct {
		name, path, model string
		hdr               map[string]string
		errType           string // Anthropic error.type or OpenAI error.code
	}{
		{"anthropic", "/v1/messages", "claude-sonnet", anthropicHeaders(slowSecret), "rate_limit_error"},
		{"openai", "/v1/chat/completions", "gpt-4o", openaiHeaders(slowSecret), "rate_limit_exceeded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.hdr["x-relay-max-wait"] = "1s"
			st, h, b := r.do(t, http.MethodPost, tc.path, tc.hdr, messageBody(tc.model, 16, "second"))
			if st != http.StatusTooManyRequests {
				t.Fatalf("status %d %s; want 429", st, b)
			}
			if ra := h.Get("Retry-After"); ra == "" || ra == "0" || ra == "1" {
				t.Errorf("retry-after %q; want the key's refill time (about a minute)", ra)
			}
			if !strings.Contains(string(b), tc.errType) || !strings.Contains(string(b), `slow`) {
				t.Errorf("body %s; want %s naming the key", b, tc.errType)
			}
		})
	}
}

// worstUSD and worstTokens are a request's worst case as the gateway
// reserves it: its estimated input plus max_tokens.
func worstCase(body string, maxTokens int, p pricing.Price) (usd float64, tokens int64) {
	in := wire.EstimateInputTokens([]byte(body))
	usd = math.Ceil(p.Cost(pricing.Usage{Input: int64(in), Output: int64(maxTokens)}, false)*1e6) / 1e6
	return usd, int64(in + maxTokens)
}

// budgetCase is one format's budget test.
type budgetCase struct {
	name, path, model, upstreamModel string
	hdr                              map[string]string
	tokens                           bool   // a token budget, else USD
	errMatch                         string // in the refusal's body
}

var budgetCases = []budgetCase{
	{name: "anthropic-usd", path: "/v1/messages", model: "claude-sonnet", upstreamModel: "claude-sonnet-4-5",
		hdr: anthropicHeaders(budgetSecret), errMatch: `"type":"rate_limit_error"`},
	{name: "openai-tokens", path: "/v1/chat/completions", model: "gpt-4o", upstreamModel: "gpt-4o-2024",
		hdr: openaiHeaders(budgetSecret), tokens: true, errMatch: `"code":"insufficient_quota"`},
}

// budgetFor returns a budget covering n worst cases of body.
func (bc budgetCase) budgetFor(body string, maxTokens, n int) *configs.Budget {
	p, _ := budgetPrices.Lookup(bc.upstreamModel)
	usd, tokens := worstCase(body, maxTokens, p)
	if bc.tokens {
		return &configs.Budget{Tokens: tokens * int64(n), Period: configs.BudgetTotal}
	}
	return &configs.Budget{USD: usd * float64(n), Period: configs.BudgetMonth}
}

// checkBudgetRefusal checks an answer is the budget's: 429, no retry,
// no retry-after, the format's error naming the budget.
func checkBudgetRefusal(t *testing.T, st int, h http.Header, b []byte, match string) {
	t.Helper()
	if st != http.StatusTooManyRequests || h.Get("X-Should-Retry") != "false" || h.Get("Retry-After") != "" {
		t.Fatalf("refusal: status %d, x-should-retry %q, retry-after %q; want 429, false, none (%s)",
			st, h.Get("X-Should-Retry"), h.Get("Retry-After"), b)
	}
	if !strings.Contains(string(b), match) || !strings.Contains(string(b), "budget") {
		t.Fatalf("refusal body %s; want %s naming the budget", b, match)
	}
}

// hammer sends n concurrent copies of body on each relay in turn and
// returns how many succeeded; every other answer must be the budget's
// refusal.
func hammer(t *testing.T, urls []*relay, bc budgetCase, body string, n int) int {
	t.Helper()
	var (
		wg sync.WaitGroup
		mu sync.Mutex
		ok int
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, h, b := urls[i%len(urls)].do(t, http.MethodPost, bc.path, bc.hdr, body)
			mu.Lock()
			defer mu.Unlock()
			if st == http.StatusOK {
				ok++
				return
			}
			checkBudgetRefusal(t, st, h, b, bc.errMatch)
		}()
	}
	wg.Wait()
	return ok
}

// realCost is what one of the simulated upstream's answers to body costs
// in the budget's unit: its input as estimated (the simulator counts it
// so) and outTokens.
func (bc budgetCase) realCost(t *testing.T, b *configs.Budget, answered []byte) float64 {
	t.Helper()
	var u struct {
		Usage struct {
			InputTokens      int `json:"input_tokens"`
			OutputTokens     int `json:"output_tokens"`
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(answered, &u); err != nil {
		t.Fatal(err)
	}
	in, out := u.Usage.InputTokens+u.Usage.PromptTokens, u.Usage.OutputTokens+u.Usage.CompletionTokens
	if b.Tokens > 0 {
		return float64(in + out)
	}
	c, _ := budgetPrices.Cost(bc.upstreamModel, pricing.Usage{Input: int64(in), Output: int64(out)}, false)
	return math.Ceil(c*1e6) / 1e6
}

// TestBudgetConcurrentNoOverspend: 50 concurrent requests against a
// budget covering 10 worst cases: what is spent never exceeds the budget
// (reservations are worst cases, so the bound "the budget plus what
// admitted requests used beyond their reservations" is the budget), and
// every other request gets the budget's refusal; in both formats.
func TestBudgetConcurrentNoOverspend(t *testing.T) {
	const maxTokens = 200
	for _, bc := range budgetCases {
		t.Run(bc.name, func(t *testing.T) {
			body := messageBody(bc.model, maxTokens, "spend carefully")
			budget := bc.budgetFor(body, maxTokens, 10)
			k := key("spender", budgetSecret, "interactive", []string{"interactive", "batch"}, "*")
			k.Budget = budget
			q, ledger := newQuotas(nil)
			r := newRelay(t, withLanes(100), withKeys(k), withQuotas(q, budgetPrices), withQuietLogs(),
				withUpstreams(simupstream.Options{Latency: 300 * time.Millisecond, OutputTokens: maxTokens}))
			_, _, sample := r.do(t, http.MethodPost, bc.path, bc.hdr, body) // one answer, to price
			ok := hammer(t, []*relay{r}, bc, body, 50) + 1
			cost := bc.realCost(t, budget, sample)
			st := ledger.Remaining(t.Context(), "spender", budget)
			t.Logf("served %d of 51; spent %.6f of %.6f %s (each costs %.6f)", ok, st.Spent, st.Limit, st.Unit, cost)
			if ok < 10 {
				t.Errorf("served %d; the budget covers at least 10 worst cases", ok)
			}
			if ok == 51 {
				t.Errorf("every request was served; the budget covers about %d", int(st.Limit/cost))
			}
			if st.Spent > st.Limit+1e-9 {
				t.Errorf("spent %.6f over the budget of %.6f", st.Spent, st.Limit)
			}
			if want := float64(ok) * cost; math.Abs(st.Spent-want) > 1e-6*float64(ok)+1e-9 {
				t.Errorf("spent %.6f; want %d answers at %.6f = %.6f", st.Spent, ok, cost, want)
			}
		})
	}
}

// TestBudgetJobsAndBatchItems: jobs and batch items spend the same budget:
// a job accepted while the budget could cover it, and no longer can when
// it runs, fails with the budget's answer as its result, a batch item
// likewise, and a job the budget can no longer cover is refused at
// submission.
func TestBudgetJobsAndBatchItems(t *testing.T) {
	const maxTokens = 16
	body := messageBody("claude-sonnet", maxTokens, "job")
	bc := budgetCases[0]
	budget := bc.budgetFor(body, maxTokens, 1)
	k := key("spender", budgetSecret, "interactive", []string{"interactive", "batch"}, "*")
	k.Budget = budget
	q, ledger := newQuotas(nil)
	r := newRelay(t, batchSetup(t, batchJobs(1), withKeys(k), withQuotas(q, budgetPrices), withHeldJobs())...)

	submit := func() (int, map[string]any) {
		st, _, m := r.doJSON(t, http.MethodPost, "/v1/jobs", budgetSecret, nil, `{"endpoint":"/v1/messages","body":`+body+`}`)
		return st, m
	}
	wait := func(id string) map[string]any {
		var m map[string]any
		natstest.Eventually(t, waitLimit, "job "+id+" ends", func() bool {
			_, _, m = r.doJSON(t, http.MethodGet, "/v1/jobs/"+id, budgetSecret, nil, "")
			return m["status"] == "succeeded" || m["status"] == "failed"
		})
		return m
	}
	var ids []string
	for range 2 {
		st, m := submit()
		if st != http.StatusAccepted {
			t.Fatalf("submit: %d %v", st, m)
		}
		ids = append(ids, m["id"].(string))
	}
	<-r.Runner.started
	r.Runner.held.Store(false)
	close(r.Runner.release)
	first, second := wait(ids[0]), wait(ids[1])
	if first["status"] == "failed" {
		first, second = second, first
	}
	if first["status"] != "succeeded" {
		t.Fatalf("jobs %v and %v; want one succeeded (the budget covers one)", first, second)
	}
	res, _ := json.Marshal(second["result"])
	if second["status"] != "failed" || !strings.Contains(string(res), "rate_limit_error") || !strings.Contains(string(res), "budget") {
		t.Fatalf("second job: %v; want failed with the budget's 429 as its result", second)
	}
	if st, m := submit(); st != http.StatusTooManyRequests || !strings.Contains(fmt.Sprint(m), "budget") {
		t.Errorf("job submitted once the budget cannot cover it: %d %v; want 429 naming the budget", st, m)
	}

	c := r.client(budgetSecret)
	batch, err := c.Messages.Batches.New(t.Context(), anthropic.MessageBatchNewParams{
		Requests: []anthropic.MessageBatchNewParamsRequest{batchRequest("item-1", "claude-sonnet")}})
	if err != nil {
		t.Fatalf("batch: %v", err)
	}
	waitBatch(t, c, batch.ID, anthropic.MessageBatchProcessingStatusEnded)
	items := results(t, c, batch.ID)
	if len(items) != 1 || items[0].Result.Type != "errored" {
		t.Fatalf("batch items %+v; want one errored by the budget", items)
	}
	if raw := items[0].Result.RawJSON(); !strings.Contains(raw, "budget") {
		t.Errorf("batch item result %s; want the budget's error", raw)
	}
	st := ledger.Remaining(t.Context(), "spender", budget)
	if st.Spent > st.Limit {
		t.Fatalf("spent %v of %v", st.Spent, st.Limit)
	}
}

// TestBudgetThreeRelays: three relays, each with its own ledger over the
// same replicated RELAY_BUDGETS in one JetStream cluster, share one
// budget: 50 requests spread over them never overspend it.
func TestBudgetThreeRelays(t *testing.T) {
	const maxTokens = 200
	cluster := natstest.StartCluster(t, 3)
	bc := budgetCases[0]
	body := messageBody(bc.model, maxTokens, "spend carefully")
	budget := bc.budgetFor(body, maxTokens, 10)
	k := key("spender", budgetSecret, "interactive", []string{"interactive"}, "*")
	k.Budget = budget
	var relays []*relay
	var ledgers []*budgets.Ledger
	for _, srv := range cluster {
		js := natstest.JetStream(t, srv)
		kv := budgetBucket(t, js)
		q, ledger := newQuotas(budgets.KVStore{KV: kv})
		ledgers = append(ledgers, ledger)
		relays = append(relays, newRelay(t, withKeys(k), withQuotas(q, budgetPrices), withQuietLogs(),
			withUpstreams(simupstream.Options{Latency: 300 * time.Millisecond, OutputTokens: maxTokens})))
	}
	_, _, sample := relays[0].do(t, http.MethodPost, bc.path, bc.hdr, body)
	ok := hammer(t, relays, bc, body, 50) + 1
	for _, l := range ledgers {
		l.Flush(t.Context(), true)
	}
	st := ledgers[0].Remaining(t.Context(), "spender", budget)
	cost := bc.realCost(t, budget, sample)
	t.Logf("served %d of 51 on three relays; spent %.6f of %.6f %s (each costs %.6f)", ok, st.Spent, st.Limit, st.Unit, cost)
	if ok < 5 || ok == 51 {
		t.Errorf("served %d of 51; the budget covers 10 worst cases", ok)
	}
	if st.Spent > st.Limit+1e-9 {
		t.Errorf("spent %.6f over the budget of %.6f", st.Spent, st.Limit)
	}
	if want := float64(ok) * cost; math.Abs(st.Spent-want) > 1e-6*float64(ok)+1e-9 {
		t.Errorf("spent %.6f; want %d answers at %.6f = %.6f", st.Spent, ok, cost, want)
	}
}

// budgetBucket declares RELAY_BUDGETS on js as cmd/relay does, with three
// replicas.
func budgetBucket(t *testing.T, js jetstream.JetStream) jetstream.KeyValue {
	t.Helper()
	decl := assets.New(js, assets.Options{Replicas: 3})
	var kv jetstream.KeyValue
	natstest.Eventually(t, waitLimit, "RELAY_BUDGETS declared", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		var err error
		kv, err = decl.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: budgets.Bucket, History: 1, Storage: jetstream.FileStorage}, false)
		return err == nil
	})
	return kv
}

// TestBudgetFailsClosed: a relay that cannot reach the budget state keeps
// serving from the chunk it holds, then refuses (503, retry-after) and
// says so in relay_key_budget_fail_closed.
func TestBudgetFailsClosed(t *testing.T) {
	const maxTokens = 16
	bc := budgetCases[0]
	body := messageBody(bc.model, maxTokens, "cut off")
	budget := bc.budgetFor(body, maxTokens, 100)
	k := key("spender", budgetSecret, "interactive", []string{"interactive"}, "*")
	k.Budget = budget
	store := &budgets.MemStore{}
	ledger := budgets.New(budgets.Options{Store: store, Registry: nil})
	q := &gateway.Quotas{Budgets: ledger}
	r := newRelay(t, withKeys(k), withQuotas(q, budgetPrices))
	if st, _, b := r.do(t, http.MethodPost, bc.path, bc.hdr, body); st != http.StatusOK {
		t.Fatalf("first request: %d %s", st, b)
	}
	store.Fail(true)
	// The chunk taken by the first request is a quarter of the budget:
	// 25 worst cases, which serve more as answers cost less; they are served, then refused.
	served := 0
	for i := 0; i < 400; i++ {
		st, h, b := r.do(t, http.MethodPost, bc.path, bc.hdr, body)
		if st == http.StatusOK {
			served++
			continue
		}
		if st != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || !strings.Contains(string(b), "budget") {
			t.Fatalf("request %d: %d %s (retry-after %q); want 503 naming the budget, with retry-after", i, st, b, h.Get("Retry-After"))
		}
		break
	}
	if served == 0 || served >= 400 {
		t.Fatalf("served %d after the store went away; want the chunk held, then refusals", served)
	}
	t.Logf("served %d from the chunk held, then failed closed", served)
	store.Fail(false)
	if st, _, b := r.do(t, http.MethodPost, bc.path, bc.hdr, body); st != http.StatusOK {
		t.Fatalf("after the store is back: %d %s", st, b)
	}
}
