package embeddednats

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Clustering the embedded server: options, their checks, and waiting for
// the JetStream cluster to be usable.

// validate reports the problems of c, each wrapping ErrInvalidOptions.
func (c *ClusterOptions) validate() []error {
	var errs []error
	if c.Name == "" || strings.ContainsAny(c.Name, " \t\r\n.*>") {
		errs = append(errs, fmt.Errorf("%w: cluster name %q must be one word", ErrInvalidOptions, c.Name))
	}
	if _, _, err := splitListen(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("%w: cluster listen %q: %w", ErrInvalidOptions, c.Listen, err))
	}
	for _, r := range c.Routes {
		if _, err := routeURL(r, ""); err != nil {
			errs = append(errs, fmt.Errorf("%w: cluster route %q: %w", ErrInvalidOptions, r, err))
		}
	}
	return errs
}

// routeURLs returns the routes as nats-route URLs, with the cluster
// credentials when there is a password. validate has checked them.
func (c *ClusterOptions) routeURLs() []*url.URL {
	out := make([]*url.URL, 0, len(c.Routes))
	for _, r := range c.Routes {
		if u, err := routeURL(r, c.Password); err == nil {
			out = append(out, u)
		}
	}
	return out
}

// routeURL parses a route address ("host:port" or
// "nats-route://host:port") into a nats-route URL.
func routeURL(r, password string) (*url.URL, error) {
	if !strings.Contains(r, "://") {
		r = "nats-route://" + r
	}
	u, err := url.Parse(r)
	switch {
	case err != nil:
		return nil, err
	case u.Scheme != "nats-route" && u.Scheme != "nats":
		return nil, errors.New("scheme must be nats-route")
	case u.Hostname() == "" || u.Port() == "":
		return nil, errors.New("must be host:port")
	}
	u.Scheme = "nats-route"
	if password != "" {
		u.User = url.UserPassword(ClusterUser, password)
	}
	return u, nil
}

// clusterPoll is how often WaitJetStream looks for a meta leader.
const clusterPoll = 100 * time.Millisecond

// Clustered reports whether the server is a node of a JetStream cluster.
func (s *Server) Clustered() bool { return s.ns.JetStreamIsClustered() }

// WaitJetStream waits until JetStream can create assets: at once on a
// single server; in a cluster, until a meta leader is elected (a
// majority of the nodes are up and routed) and this node knows it. It
// logs every 10 s while it waits and returns early when ctx ends.
func (s *Server) WaitJetStream(ctx context.Context) error {
	if !s.ns.JetStreamIsClustered() {
		return nil
	}
	t := time.NewTicker(clusterPoll)
	defer t.Stop()
	start := time.Now()
	last := start
	for {
		if s.ns.JetStreamIsCurrent() {
			return nil
		}
		if time.Since(last) >= 10*time.Second {
			last = time.Now()
			s.log.l.Warn("waiting for a JetStream cluster quorum (a majority of the nodes up and routed)",
				"waited_s", time.Since(start).Round(time.Second).Seconds())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("embeddednats: wait for a JetStream cluster quorum: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// ClusterError reports why this node's JetStream cluster cannot take
// writes now (no meta leader: fewer than a majority of the nodes are
// reachable), or nil; nil on a single server. It is cheap.
func (s *Server) ClusterError() error {
	if !s.ns.Running() || !s.ns.JetStreamIsClustered() {
		return nil
	}
	if !s.ns.JetStreamIsCurrent() {
		return errors.New("jetstream cluster has no meta leader (no quorum: fewer than a majority of the nodes reachable)")
	}
	return nil
}
