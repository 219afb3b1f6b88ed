package gateway

// This file owns metering's seam in the gateway: recording each finished
// upstream call (synchronous requests here, jobs and batch items in
// jobrunner.go) with the Meter, and GET /v1/usage, a key's own usage
// from the stored counters and its remaining budget.

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/relaygw/relay/gateway/metering"
)

// BudgetReporter reports a key's remaining budget for GET /v1/usage. The
// budget code implements it; nil, or a nil *metering.Budget, shows none.
type BudgetReporter interface {
	// RemainingBudget returns the budget of the key named key, or nil
	// when the key has none.
	RemainingBudget(ctx context.Context, key string) (*metering.Budget, error)
}

// record meters a synchronous request that an upstream answered. Calls
// that never reached an upstream, and upstream refusals that state no
// usage, are not metered.
func (s *Server) record(x *exchange) {
	if x.upstreamModel == "" || !x.usage.Known && (x.status < 200 || x.status > 299) {
		return
	}
	s.meter.Record(metering.Call{
		Mode: metering.ModeSync, RequestID: x.requestID, Key: x.keyName, Route: x.route,
		Provider: x.provider, Model: x.upstreamModel, Usage: x.usage,
	})
}

// seedMeter creates the metering series of cfg's keys on the routes each
// may use, and gives the Meter cfg's prices.
func (s *Server) seedMeter(cfg Config, st *state) {
	s.meter.SetPrices(cfg.Prices)
	rl, ok := cfg.Dispatcher.(routeLister)
	if !ok {
		return
	}
	routes := rl.RouteProviders()
	keys := make([]metering.KeyRoutes, 0, len(st.keys))
	for _, k := range st.keys {
		kr := metering.KeyRoutes{Key: k.Name, Routes: map[string][]string{}}
		for route, providers := range routes {
			if k.allRoutes || k.routes[route] {
				kr.Routes[route] = providers
			}
		}
		keys = append(keys, kr)
	}
	s.meter.Seed(keys)
}

// handleUsage serves GET /v1/usage: the calling key's usage by day and
// upstream model (query: from and to, UTC days YYYY-MM-DD, inclusive;
// default this month), from the stored counters, and its remaining
// budget. Errors come in the caller's format.
func (s *Server) handleUsage(c echo.Context) error {
	st := s.state.Load()
	r := c.Request()
	f, rid := formatOf(r), requestIDOf(c)
	k, aerr := st.authenticate(r)
	if aerr != nil {
		s.writeError(c, f, rid, aerr)
		return nil
	}
	from, to, err := metering.ParseRange(r.URL.Query(), time.Now())
	if err != nil {
		s.writeError(c, f, rid, errBadRequest(err.Error()))
		return nil
	}
	ku, err := s.meter.KeyUsage(r.Context(), k.Name, from, to)
	if err != nil {
		ae := newError(kindStoreUnavailable, "usage counters are unavailable; try again shortly")
		ae.cause = err
		s.writeError(c, f, rid, ae)
		return nil
	}
	if s.budgets != nil {
		b, err := s.budgets.RemainingBudget(r.Context(), k.Name)
		if err != nil {
			ae := newError(kindStoreUnavailable, "budget state is unavailable; try again shortly")
			ae.cause = err
			s.writeError(c, f, rid, ae)
			return nil
		}
		ku.Budget = b
	}
	c.Response().Header()["X-Request-Id"] = []string{rid}
	c.Response().Header()["Cache-Control"] = []string{"no-store"}
	return c.JSON(http.StatusOK, ku)
}
