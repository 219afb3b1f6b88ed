package workers

import (
	"testing"
	"time"
)

func TestRetryBudget(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newRetryBudget(0.2, 3, func() time.Time { return now })
	// Starts with its burst.
	spent := 0
	for b.allow() {
		spent++
	}
	if spent != 13 {
		t.Fatalf("initial budget = %d retries; want floor+burst = 13", spent)
	}
	// 100 requests in no time earn 20 retries, capped at 13.
	for i := 0; i < 50; i++ {
		b.request()
	}
	spent = 0
	for b.allow() {
		spent++
	}
	if spent != 10 {
		t.Errorf("50 requests earned %d retries; want 10", spent)
	}
	// Time alone earns the floor rate.
	now = now.Add(2 * time.Second)
	spent = 0
	for b.allow() {
		spent++
	}
	if spent != 6 {
		t.Errorf("2 s earned %d retries; want 6", spent)
	}
	// Under a sustained outage the retries stay within ratio of requests
	// plus the floor.
	spent = 0
	const requests = 10000
	for i := 0; i < requests; i++ {
		now = now.Add(time.Millisecond) // 1000 requests/s for 10 s
		b.request()
		if b.allow() {
			spent++
		}
	}
	if limit := int(requests*0.2 + 10*3 + 13); spent > limit {
		t.Errorf("outage spent %d retries for %d requests; want at most %d", spent, requests, limit)
	}
}
