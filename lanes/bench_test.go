package lanes

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkDispatchLatency measures, with 1,000 requests parked on one
// route, the time from a slot being freed (the release's Kick) to the next
// waiter holding its grant. It reports p50 and p99 in ns.
func BenchmarkDispatchLatency(b *testing.B) {
	const parked = 1000
	s, err := Open(context.Background(), Options{Lanes: []Spec{{Name: "interactive", MaxDepth: 2 * parked, MaxWait: time.Hour}}})
	if err != nil {
		b.Fatal(err)
	}
	var (
		mu   sync.Mutex
		free int
	)
	admit := func() (Grant, time.Time, bool) {
		mu.Lock()
		defer mu.Unlock()
		if free == 0 {
			return nil, time.Time{}, false
		}
		free--
		return noGrant{}, time.Time{}, true
	}
	granted := make(chan time.Time, 16)
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	park := func() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := s.Wait(ctx, Waiter{Lane: "interactive", Key: "k", Route: "r", Admit: admit}); err == nil {
				granted <- time.Now()
			}
		}()
	}
	waitParked := func(n int64) {
		for s.parked.Load() < n {
			time.Sleep(10 * time.Microsecond)
		}
	}
	for range parked {
		park()
	}
	waitParked(parked)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		mu.Lock()
		free++
		mu.Unlock()
		start := time.Now()
		s.Kick()
		at := <-granted
		lat = append(lat, at.Sub(start))
		b.StopTimer()
		park()
		waitParked(parked)
		b.StartTimer()
	}
	b.StopTimer()
	cancel()
	wg.Wait()
	_ = s.Close()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Nanoseconds()), "p99-ns")
}

// BenchmarkWaitDirect is the cost of one request going through a lane when
// capacity is there: park, kick, dispatch pass, grant, return.
func BenchmarkWaitDirect(b *testing.B) {
	s, err := Open(context.Background(), Options{Lanes: []Spec{{Name: "interactive", MaxDepth: testMaxDepth, MaxWait: time.Hour}}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	w := Waiter{Lane: "interactive", Key: "k", Route: "r",
		Admit: func() (Grant, time.Time, bool) { return noGrant{}, time.Time{}, true }}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, _, err := s.Wait(ctx, w); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParkCost is what parking one request costs while nothing
// admits it: park, wait goroutine-free, leave by cancellation.
func BenchmarkParkCost(b *testing.B) {
	s, err := Open(context.Background(), Options{Lanes: []Spec{{Name: "interactive", MaxDepth: 1 << 30, MaxWait: time.Hour}}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	w := Waiter{Lane: "interactive", Key: "k", Route: "r",
		Admit: func() (Grant, time.Time, bool) { return nil, time.Time{}, false }}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, _, err := s.Wait(ctx, w); err == nil {
			b.Fatal("admitted")
		}
	}
}

// noGrant is a grant with nothing to give back.
type noGrant struct{}

// Release does nothing.
func (noGrant) Release() {}
