package jobs_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/lanes/jobs"
)

func batchItems(n int) []jobs.BatchItem {
	items := make([]jobs.BatchItem, n)
	for i := range items {
		items[i] = jobs.BatchItem{CustomID: fmt.Sprintf("req-%05d", i), Model: "claude-sonnet",
			Params: json.RawMessage(`{"model":"claude-sonnet","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`)}
	}
	return items
}

func waitBatchEnded(t *testing.T, s *jobs.Service, key, id string) jobs.Batch {
	t.Helper()
	var b jobs.Batch
	// Generous: 1,200 jobs under -race on a loaded 2-core machine.
	natstest.Eventually(t, 90*time.Second, "batch "+id+" ended", func() bool {
		var err error
		if b, err = s.GetBatch(t.Context(), key, id); err != nil {
			t.Fatalf("GetBatch: %v", err)
		}
		return b.ProcessingStatus == jobs.BatchEnded
	})
	return b
}

// A larger batch: stored durably, run, counted, results in order; a new
// Service (empty cache, as after a restart) sees the same; listing pages
// newest first.
func TestBatchLargeAndList(t *testing.T) {
	st := newStore(t)
	s := start(t, st.js, okRunner, jobs.Options{Workers: 16})
	const n = 1200 // three chunks of items; kept small for -race
	t0 := time.Now()
	b, err := s.SubmitBatch(t.Context(), "team-a", batchItems(n), "batch", "")
	if err != nil {
		t.Fatalf("SubmitBatch: %v", err)
	}
	t.Logf("submitted %d items in %v", n, time.Since(t0))
	if b.ProcessingStatus != jobs.BatchInProgress || b.RequestCounts.Processing != n || !jobs.ValidBatchID(b.ID) {
		t.Fatalf("submitted batch %+v", b)
	}
	ended := waitBatchEnded(t, s.Service, "team-a", b.ID)
	if ended.RequestCounts.Succeeded != n || ended.EndedAt == nil {
		t.Fatalf("ended batch %+v", ended)
	}
	t0 = time.Now()
	_, seq, err := s.BatchResults(t.Context(), "team-a", b.ID)
	if err != nil {
		t.Fatalf("BatchResults: %v", err)
	}
	i := 0
	for line, err := range seq {
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			CustomID string `json:"custom_id"`
			Result   struct {
				Type    string          `json:"type"`
				Message json.RawMessage `json:"message"`
			} `json:"result"`
		}
		if err := json.Unmarshal(line, &r); err != nil || r.CustomID != fmt.Sprintf("req-%05d", i) ||
			r.Result.Type != "succeeded" || len(r.Result.Message) == 0 {
			t.Fatalf("line %d: %s", i, line)
		}
		i++
	}
	t.Logf("streamed %d results in %v", i, time.Since(t0))
	if i != n {
		t.Fatalf("%d result lines; want %d", i, n)
	}

	// A fresh Service on the same store: the batch record alone answers.
	s2 := open(t, st.js, okRunner, jobs.Options{})
	if b2, err := s2.GetBatch(t.Context(), "team-a", b.ID); err != nil || b2.RequestCounts != ended.RequestCounts ||
		!b2.EndedAt.Equal(*ended.EndedAt) {
		t.Fatalf("GetBatch from a new Service = %+v, %v", b2, err)
	}
	if _, err := s2.GetBatch(t.Context(), "team-b", b.ID); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("another key's batch: %v; want ErrNotFound", err)
	}

	// Listing: three batches, newest first.
	ids := []string{b.ID}
	for range 2 {
		time.Sleep(2 * time.Millisecond) // distinct ULID milliseconds
		x, err := s.SubmitBatch(t.Context(), "team-a", batchItems(1), "batch", "")
		if err != nil {
			t.Fatal(err)
		}
		ids = append([]string{x.ID}, ids...)
	}
	page, err := s.ListBatches(t.Context(), "team-a", 2, "", "")
	if err != nil || len(page.Data) != 2 || page.Data[0].ID != ids[0] || page.Data[1].ID != ids[1] || !page.HasMore ||
		*page.FirstID != ids[0] || *page.LastID != ids[1] {
		t.Fatalf("first page %+v %v; want %v", page, err, ids[:2])
	}
	page, err = s.ListBatches(t.Context(), "team-a", 2, "", *page.LastID)
	if err != nil || len(page.Data) != 1 || page.Data[0].ID != ids[2] || page.HasMore {
		t.Fatalf("after_id page %+v %v", page, err)
	}
	page, err = s.ListBatches(t.Context(), "team-a", 1, ids[2], "")
	if err != nil || len(page.Data) != 1 || page.Data[0].ID != ids[1] || !page.HasMore {
		t.Fatalf("before_id page %+v %v; want %s with more before it", page, err, ids[1])
	}
	if page, err := s.ListBatches(t.Context(), "team-b", 20, "", ""); err != nil || len(page.Data) != 0 || page.FirstID != nil {
		t.Fatalf("another key's list %+v %v", page, err)
	}

	if err := s.DeleteBatch(t.Context(), "team-a", b.ID); err != nil {
		t.Fatalf("DeleteBatch: %v", err)
	}
	if _, err := s.GetBatch(t.Context(), "team-a", b.ID); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("GetBatch after delete: %v", err)
	}
}

func TestBatchValidate(t *testing.T) {
	st := newStore(t)
	s := open(t, st.js, okRunner, jobs.Options{MaxBatchRequests: 3})
	ok := json.RawMessage(`{"model":"m"}`)
	for name, items := range map[string][]jobs.BatchItem{
		"none":      nil,
		"too many":  batchItems(4),
		"dup":       {{CustomID: "a", Model: "m", Params: ok}, {CustomID: "a", Model: "m", Params: ok}},
		"bad id":    {{CustomID: "a.b", Model: "m", Params: ok}},
		"long id":   {{CustomID: string(make([]byte, 65)), Model: "m", Params: ok}},
		"array":     {{CustomID: "a", Model: "m", Params: json.RawMessage(`[]`)}},
		"not JSON":  {{CustomID: "a", Model: "m", Params: json.RawMessage(`{"model":`)}},
		"no model":  {{CustomID: "a", Params: json.RawMessage(`{"max_tokens":1}`)}},
		"streaming": {{CustomID: "a", Model: "m", Stream: true, Params: json.RawMessage(`{"model":"m","stream":true}`)}},
	} {
		if _, err := s.SubmitBatch(t.Context(), "k", items, "batch", ""); !errors.Is(err, jobs.ErrInvalid) {
			t.Errorf("%s: %v; want ErrInvalid", name, err)
		}
	}
	if err := s.ValidateBatch(batchItems(4)); !errors.Is(err, jobs.ErrBatchTooLarge) {
		t.Errorf("4 of 3: %v; want ErrBatchTooLarge", err)
	}
}
