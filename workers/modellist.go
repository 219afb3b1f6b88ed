// This file owns an HTTPProvider's list of its upstream's models: the
// fetch (Anthropic's paginated GET /v1/models, OpenAI's GET /models) and
// its cache, refreshed in the background.

package workers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Bounds of the model list fetch. They are not settings of the
// configuration: /v1/models must answer fast whatever the upstream does,
// and a model list changes with model releases, not by the minute.
const (
	// modelsTTL is how long a fetched list is served without a refresh;
	// after it the stale list is still served while a refresh runs.
	modelsTTL = 10 * time.Minute
	// modelsRetry is how long after a failed fetch the next may start,
	// so a down upstream is not asked on every /v1/models.
	modelsRetry = 30 * time.Second
	// modelsFetchTimeout bounds one fetch, all its pages included.
	modelsFetchTimeout = 15 * time.Second
	// modelsMaxPages and modelsMaxBytes bound what one fetch reads:
	// pages (of up to 1,000 models) and bytes per page.
	modelsMaxPages = 20
	modelsMaxBytes = 8 << 20
)

// modelCache is an HTTPProvider's cached model list: at most one fetch in
// flight, run in the background under the provider's context.
type modelCache struct {
	mu       sync.Mutex
	models   []UpstreamModel
	known    bool
	fetched  time.Time     // when models was fetched
	failedAt time.Time     // when the last fetch failed
	inflight chan struct{} // closed when the fetch in flight ends; nil when none

	bg     context.Context // the fetches' context; canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ ModelLister = (*HTTPProvider)(nil)

// UpstreamModels returns the upstream's models (see ModelLister): a cached
// list at once, refreshing it in the background once modelsTTL old;
// without one, it starts a fetch and waits for it until ctx ends.
func (p *HTTPProvider) UpstreamModels(ctx context.Context) ([]UpstreamModel, bool) {
	c := &p.modelList
	c.mu.Lock()
	now := time.Now()
	if c.inflight == nil && c.bg.Err() == nil &&
		(!c.known || now.Sub(c.fetched) >= modelsTTL) && now.Sub(c.failedAt) >= modelsRetry {
		c.startLocked(p)
	}
	models, known, wait := c.models, c.known, c.inflight
	c.mu.Unlock()
	if known || wait == nil {
		return models, known
	}
	select {
	case <-wait:
	case <-ctx.Done():
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.models, c.known
}

// startLocked starts a fetch in the background; c.mu is held.
func (c *modelCache) startLocked(p *HTTPProvider) {
	done := make(chan struct{})
	c.inflight = done
	c.wg.Go(func() {
		ctx, cancel := context.WithTimeout(c.bg, min(modelsFetchTimeout, p.opts.Timeout))
		models, err := p.fetchModels(ctx)
		cancel()
		c.mu.Lock()
		if err == nil {
			c.models, c.known, c.fetched = models, true, time.Now()
		} else {
			c.failedAt = time.Now()
		}
		c.inflight = nil
		c.mu.Unlock()
		close(done)
	})
}

// Close stops the model list fetch in flight, if any, and waits for it,
// then closes idle connections. Calls in flight are not affected; the
// provider may still serve them.
func (p *HTTPProvider) Close() {
	p.modelList.cancel()
	p.modelList.wg.Wait()
	p.CloseIdleConnections()
}

// fetchModels reads the upstream's whole model list.
func (p *HTTPProvider) fetchModels(ctx context.Context) ([]UpstreamModel, error) {
	if p.opts.Format == FormatOpenAI {
		var page openAIModelPage
		if err := p.getJSON(ctx, p.modelsURL, &page); err != nil {
			return nil, err
		}
		out := make([]UpstreamModel, 0, len(page.Data))
		for _, m := range page.Data {
			if m.ID != "" {
				out = append(out, UpstreamModel{ID: m.ID, Created: unixOrZero(m.Created)})
			}
		}
		return out, nil
	}
	var out []UpstreamModel
	after := ""
	for range modelsMaxPages {
		u := p.modelsURL + "?limit=1000"
		if after != "" {
			u += "&after_id=" + url.QueryEscape(after)
		}
		var page anthropicModelPage
		if err := p.getJSON(ctx, u, &page); err != nil {
			return nil, err
		}
		for _, m := range page.Data {
			if m.ID != "" {
				out = append(out, UpstreamModel{ID: m.ID, DisplayName: m.DisplayName, Created: m.CreatedAt})
			}
		}
		if !page.HasMore || page.LastID == "" || page.LastID == after {
			return out, nil
		}
		after = page.LastID
	}
	return out, nil // more pages than a real upstream has: keep what came
}

type anthropicModelPage struct {
	Data []struct {
		ID          string    `json:"id"`
		DisplayName string    `json:"display_name"`
		CreatedAt   time.Time `json:"created_at"`
	} `json:"data"`
	HasMore bool   `json:"has_more"`
	LastID  string `json:"last_id"`
}

type openAIModelPage struct {
	Data []struct {
		ID      string `json:"id"`
		Created int64  `json:"created"`
	} `json:"data"`
}

func unixOrZero(s int64) time.Time {
	if s <= 0 {
		return time.Time{}
	}
	return time.Unix(s, 0).UTC()
}

// getJSON GETs u with the provider's key and decodes a 2xx JSON answer
// into v.
func (p *HTTPProvider) getJSON(ctx context.Context, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("build models request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	p.setAuth(req.Header)
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("list models: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return fmt.Errorf("list models: upstream status %d", resp.StatusCode)
	}
	lr := &io.LimitedReader{R: resp.Body, N: modelsMaxBytes + 1}
	if err := json.NewDecoder(lr).Decode(v); err != nil {
		return fmt.Errorf("list models: %w", err)
	}
	if lr.N <= 0 {
		return errors.New("list models: answer too large")
	}
	return nil
}
