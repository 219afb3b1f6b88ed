package configs

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/relaygw/relay/workers/modelglob"
)

// Validate checks c and returns every problem at once, as Problem values
// joined with errors.Join (see Problems), or nil. Each problem names its
// YAML path, for example "providers[1].rpm: must be >= 0". Messages never
// hold a key, an API key or a signing secret.
//
// Validate accepts the zero values whose meaning is documented (a target
// weight of 0, an empty target model, key lanes or routes, or key
// default_lane), so a Config built in code need not repeat them. It does
// not modify c.
func (c *Config) Validate() error {
	var ps problems
	c.validateServer(&ps)
	c.validateNATS(&ps)
	c.validateNATSAuth(&ps)
	c.validateLanes(&ps)
	c.validateProviders(&ps)
	c.validateRoutes(&ps)
	c.validateKeys(&ps)
	c.validatePrices(&ps)
	c.validateRest(&ps)
	return joinProblems(ps)
}

// The bounds of max_json_depth: below MinMaxJSONDepth real requests
// (tool schemas nest) would be refused; above MaxMaxJSONDepth the parsers
// that run after the check recurse deep enough to cost real stack.
const (
	MinMaxJSONDepth = 16
	MaxMaxJSONDepth = 10000
	// MinAdminTokenLen is the shortest admin.token accepted.
	MinAdminTokenLen = 16
)

// validateServer checks the top-level listener and limit fields.
func (c *Config) validateServer(ps *problems) {
	checkHostPort(ps, "listen", c.Listen)
	if c.AdminListen != "" {
		checkHostPort(ps, "admin_listen", c.AdminListen)
		if c.AdminListen == c.Listen {
			ps.add("admin_listen", "must differ from listen")
		}
	}
	if t := c.Admin.Token; t != "" && len(t) < MinAdminTokenLen {
		ps.add("admin.token", "must be at least %d characters (a long random value)", MinAdminTokenLen)
	}
	if c.ShutdownGrace < 0 {
		ps.add("shutdown_grace", "must be >= 0")
	}
	if c.MaxBodyBytes <= 0 {
		ps.add("max_body_bytes", "must be > 0")
	}
	if c.MaxJSONDepth < MinMaxJSONDepth || c.MaxJSONDepth > MaxMaxJSONDepth {
		ps.add("max_json_depth", "must be from %d to %d", MinMaxJSONDepth, MaxMaxJSONDepth)
	}
	if c.BodyMemoryBytes <= c.MaxBodyBytes {
		ps.add("body_memory_bytes", "must be more than max_body_bytes (%d)", c.MaxBodyBytes)
	}
}

// validateNATS checks the nats block.
func (c *Config) validateNATS(ps *problems) {
	n := c.NATS
	if n.URL != "" {
		for i, seed := range strings.Split(n.URL, ",") {
			if !validNATSURL(strings.TrimSpace(seed)) {
				ps.add("nats.url", "seed %d must be host:port or a nats://, tls://, ws:// or wss:// URL with a host", i+1)
			}
		}
	}
	if n.Listen != "" {
		checkHostPort(ps, "nats.listen", n.Listen)
	}
	if n.URL == "" && strings.TrimSpace(n.StoreDir) == "" {
		ps.add("nats.store_dir", "must not be empty when the embedded server is used (nats.url empty)")
	}
	if n.Sync != "" && n.Sync != "always" {
		if d, err := time.ParseDuration(n.Sync); err != nil || d <= 0 {
			ps.add("nats.sync", "must be \"always\" or a positive duration such as \"2m\"")
		}
	}
	c.validateCluster(ps)
}

// validateCluster checks nats.server_name, nats.cluster and
// nats.replicas against the cluster's size.
func (c *Config) validateCluster(ps *problems) {
	n := c.NATS
	if n.ServerName != "" && !validToken(n.ServerName) {
		ps.add("nats.server_name", "must be one word of letters, digits, _ and -")
	}
	if cl := n.Cluster; cl != nil {
		switch {
		case n.URL != "":
			ps.add("nats.cluster", "clusters the embedded server: not with nats.url (whose servers are clustered already)")
		case n.ServerName == "":
			ps.add("nats.server_name", "must be set, unique per node, with nats.cluster")
		}
		if !validToken(cl.Name) {
			ps.add("nats.cluster.name", "must be one word of letters, digits, _ and -")
		}
		checkHostPort(ps, "nats.cluster.listen", cl.Listen)
		if len(cl.Routes) == 0 {
			ps.add("nats.cluster.routes", "must list the nodes' route addresses")
		}
		for i, r := range cl.Routes {
			if !validRoute(r) {
				ps.add(fmt.Sprintf("nats.cluster.routes[%d]", i), "must be host:port or nats-route://host:port")
			}
		}
	}
	if lp := n.LeasePeriod.Std(); lp != 0 && (lp < 3*time.Second || lp > time.Minute) {
		ps.add("nats.lease_period", "must be between 3s and 1m")
	}
	switch {
	case n.Replicas != 0 && n.Replicas != 1 && n.Replicas != 3:
		ps.add("nats.replicas", "must be 1 or 3")
	case n.Replicas == 3 && n.URL == "" && (n.Cluster == nil || len(n.Cluster.Routes) < 2):
		ps.add("nats.replicas", "3 needs a cluster of 3 or more nodes: nats.cluster with 2 or more routes, or nats.url")
	}
}

// validToken reports whether s is a non-empty word of letters, digits, _
// and -.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// validRoute reports whether s is host:port or nats-route://host:port.
func validRoute(s string) bool {
	if rest, ok := strings.CutPrefix(s, "nats-route://"); ok {
		s = rest
	}
	host, port, err := net.SplitHostPort(s)
	return err == nil && host != "" && validPort(port)
}

// validNATSURL reports whether s is a usable NATS server address.
func validNATSURL(s string) bool {
	if !strings.Contains(s, "://") {
		host, port, err := net.SplitHostPort(s)
		return err == nil && host != "" && validPort(port)
	}
	u, err := url.Parse(s)
	if err != nil || u.Hostname() == "" {
		return false
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
		return true
	}
	return false
}

// validateLanes checks the lanes list.
func (c *Config) validateLanes(ps *problems) {
	if len(c.Lanes) == 0 {
		ps.add("lanes", "must not be empty")
		return
	}
	seen := make(map[string]int)
	sum := 0.0
	for i, l := range c.Lanes {
		p := fmt.Sprintf("lanes[%d]", i)
		checkName(ps, p+".name", "lane", l.Name, seen, "lanes", i)
		if l.MaxDepth <= 0 {
			ps.add(p+".max_depth", "must be > 0")
		}
		if l.MaxWait <= 0 {
			ps.add(p+".max_wait", "must be > 0")
		}
		if !(l.MinShare >= 0 && l.MinShare < 1) {
			ps.add(p+".min_share", "must be >= 0 and < 1")
			continue
		}
		sum += l.MinShare
	}
	if sum >= 1 {
		ps.add("lanes", "the min_share values add up to %g; they must add up to less than 1", sum)
	}
}

// validateProviders checks the providers list.
func (c *Config) validateProviders(ps *problems) {
	if len(c.Providers) == 0 {
		ps.add("providers", "must not be empty")
	}
	seen := make(map[string]int)
	for i, pr := range c.Providers {
		p := fmt.Sprintf("providers[%d]", i)
		checkName(ps, p+".name", "provider", pr.Name, seen, "providers", i)
		switch pr.Type {
		case "anthropic", "openai":
		case "":
			ps.add(p+".type", "must be set to anthropic or openai")
		default:
			ps.add(p+".type", "must be anthropic or openai, not %q", pr.Type)
		}
		checkBaseURL(ps, p+".base_url", pr.Type, pr.BaseURL)
		checkSecret(ps, p+".api_key", pr.APIKey)
		for _, f := range []struct {
			name string
			v    int
		}{
			{"max_concurrency", pr.MaxConcurrency}, {"rpm", pr.RPM}, {"input_tpm", pr.InputTPM},
			{"output_tpm", pr.OutputTPM}, {"max_idle_conns", pr.MaxIdleConns},
		} {
			if f.v < 0 {
				ps.add(p+"."+f.name, "must be >= 0")
			}
		}
		if pr.Timeout <= 0 {
			ps.add(p+".timeout", "must be > 0")
		}
		switch {
		case pr.FirstByteTimeout <= 0:
			ps.add(p+".first_byte_timeout", "must be > 0")
		case pr.Timeout > 0 && pr.FirstByteTimeout > pr.Timeout:
			ps.add(p+".first_byte_timeout", "must be <= timeout (%s)", pr.Timeout)
		}
		checkBreaker(ps, p+".breaker", pr.Breaker)
	}
}

// checkBaseURL checks a provider's base_url without ever quoting it (it
// may hold credentials).
func checkBaseURL(ps *problems, path, typ, raw string) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		ps.add(path, "must be an absolute http:// or https:// URL with a host")
		return
	}
	if u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		ps.add(path, "must not have a query or fragment")
	}
	if typ == "anthropic" && strings.HasSuffix(strings.TrimRight(u.Path, "/"), "/v1") {
		ps.add(path, "must not end in /v1 for an anthropic provider (https://api.anthropic.com; /v1/messages is appended)")
	}
}

// checkBreaker checks a provider's breaker settings.
func checkBreaker(ps *problems, path string, b Breaker) {
	if !(b.FailureRatio > 0 && b.FailureRatio <= 1) {
		ps.add(path+".failure_ratio", "must be > 0 and <= 1")
	}
	if b.MinRequests < 1 {
		ps.add(path+".min_requests", "must be >= 1")
	}
	if b.Window <= 0 {
		ps.add(path+".window", "must be > 0")
	}
	if b.OpenFor <= 0 {
		ps.add(path+".open_for", "must be > 0")
	}
}

// validateRoutes checks the routes list, their targets and fallbacks.
func (c *Config) validateRoutes(ps *problems) {
	if len(c.Routes) == 0 {
		ps.add("routes", "must not be empty")
	}
	models := make(map[string]int)
	for i, r := range c.Routes {
		p := fmt.Sprintf("routes[%d]", i)
		switch {
		case strings.TrimSpace(r.Model) == "":
			ps.add(p+".model", "must not be empty")
		case r.Model == "*":
			ps.add(p+".model", "must not be \"*\" (it means every route in keys[].routes)")
		case strings.TrimSpace(r.Model) != r.Model:
			ps.add(p+".model", "must not start or end with white space")
		case modelglob.IsPattern(r.Model) && modelglob.Check(r.Model) != nil:
			ps.add(p+".model", "pattern %q: %v", r.Model, modelglob.Check(r.Model))
		default:
			if j, dup := models[r.Model]; dup {
				ps.add(p+".model", "duplicate route %q (also routes[%d])", r.Model, j)
			} else {
				models[r.Model] = i
			}
		}
		if len(r.Targets) == 0 {
			ps.add(p+".targets", "must not be empty")
		}
		for j, t := range r.Targets {
			tp := fmt.Sprintf("%s.targets[%d]", p, j)
			if _, ok := c.Provider(t.Provider); !ok {
				ps.add(tp+".provider", "unknown provider %q", t.Provider)
			}
			if t.Weight < 0 {
				ps.add(tp+".weight", "must be >= 0")
			}
		}
	}
	for i, r := range c.Routes {
		seen := make(map[string]bool)
		for j, f := range r.Fallbacks {
			fp := fmt.Sprintf("routes[%d].fallbacks[%d]", i, j)
			switch _, ok := models[f]; {
			case !ok:
				ps.add(fp, "unknown route %q", f)
			case f == r.Model:
				ps.add(fp, "a route cannot fall back to itself")
			case seen[f]:
				ps.add(fp, "duplicate fallback %q", f)
			}
			seen[f] = true
		}
	}
	c.checkFallbackCycles(ps, models)
	c.checkPatternOverlaps(ps, models)
}

// checkPatternOverlaps reports two patterns that can match one model id
// with the same number of literal characters: neither is more specific,
// so which serves the id would depend on file order. It is reported at
// the later route, with a model id both match.
func (c *Config) checkPatternOverlaps(ps *problems, models map[string]int) {
	var pats []int
	for i, r := range c.Routes {
		if j, ok := models[r.Model]; ok && j == i && modelglob.IsPattern(r.Model) {
			pats = append(pats, i)
		}
	}
	for x, j := range pats {
		b := c.Routes[j].Model
		for _, i := range pats[:x] {
			a := c.Routes[i].Model
			if modelglob.Specificity(a) != modelglob.Specificity(b) {
				continue
			}
			if id, ok := modelglob.Witness(a, b); ok {
				ps.add(fmt.Sprintf("routes[%d].model", j),
					"pattern %q overlaps routes[%d] %q, which is as specific (%d literal characters): both match %q; "+
						"make one more specific or add an exact route", b, i, a, modelglob.Specificity(a), id)
			}
		}
	}
}

// checkFallbackCycles reports each cycle of two or more routes in the
// fallback graph once, at the first route of the cycle in file order.
func (c *Config) checkFallbackCycles(ps *problems, models map[string]int) {
	const (
		unvisited = iota
		active
		done
	)
	state := make([]int, len(c.Routes))
	var stack []int
	var visit func(i int)
	visit = func(i int) {
		state[i] = active
		stack = append(stack, i)
		for _, f := range c.Routes[i].Fallbacks {
			j, ok := models[f]
			if !ok || j == i {
				continue // reported as unknown or as itself
			}
			switch state[j] {
			case unvisited:
				visit(j)
			case active:
				ps.add(fmt.Sprintf("routes[%d].fallbacks", cycleStart(stack, j)), "fallback cycle: %s", c.cycleText(stack, j))
			}
		}
		stack = stack[:len(stack)-1]
		state[i] = done
	}
	for i := range c.Routes {
		if state[i] == unvisited {
			if _, ok := models[c.Routes[i].Model]; ok && models[c.Routes[i].Model] == i {
				visit(i)
			}
		}
	}
}

// cycleStart returns the lowest route index on the cycle that closes at j.
func cycleStart(stack []int, j int) int {
	lo := j
	for k := len(stack) - 1; k >= 0 && stack[k] != j; k-- {
		lo = min(lo, stack[k])
	}
	return lo
}

// cycleText renders the cycle that closes at route j, such as "a -> b -> a".
func (c *Config) cycleText(stack []int, j int) string {
	k := len(stack) - 1
	for stack[k] != j {
		k--
	}
	names := make([]string, 0, len(stack)-k+1)
	for _, i := range stack[k:] {
		names = append(names, c.Routes[i].Model)
	}
	names = append(names, c.Routes[j].Model)
	return strings.Join(names, " -> ")
}

// validateRest checks callbacks, jobs, log and simulator.
func (c *Config) validateRest(ps *problems) {
	if c.Retry.MaxAttempts < 1 || c.Retry.MaxAttempts > 10 {
		ps.add("retry.max_attempts", "must be between 1 and 10")
	}
	if c.Retry.BudgetRatio <= 0 || c.Retry.BudgetRatio > 1 {
		ps.add("retry.budget_ratio", "must be > 0 and <= 1")
	}
	if c.Retry.BudgetFloor <= 0 {
		ps.add("retry.budget_floor", "must be > 0")
	}
	c.validateSchedule(ps)
	for _, s := range c.Callbacks.SigningSecrets() {
		rest, ok := strings.CutPrefix(s, "whsec_")
		if !ok {
			ps.add("callbacks.signing_secret", "must start with whsec_ (Standard Webhooks)")
		} else if b, err := base64.StdEncoding.DecodeString(rest); err != nil || len(b) == 0 {
			ps.add("callbacks.signing_secret", "must be whsec_ followed by non-empty standard base64")
		}
	}
	if c.Jobs.ResultTTL <= 0 {
		ps.add("jobs.result_ttl", "must be > 0")
	}
	if c.Jobs.Workers < 1 || c.Jobs.Workers > 10000 {
		ps.add("jobs.workers", "must be between 1 and 10000")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		ps.add("log.level", "must be debug, info, warn or error, not %q", c.Log.Level)
	}
	c.validateTracing(ps)
	if s := c.Simulator; s != nil {
		if !loopbackHostPort(s.Listen) {
			ps.add("simulator.listen", "must be a loopback host:port (127.x.x.x, [::1] or localhost)")
		}
		if s.Latency < 0 {
			ps.add("simulator.latency", "must be >= 0")
		}
		if s.TokenInterval < 0 {
			ps.add("simulator.token_interval", "must be >= 0")
		}
	}
}

// checkName checks a list entry's name: non-empty, in the NATS subject
// token charset, and unique within the list (seen maps names to indexes).
func checkName(ps *problems, path, what, name string, seen map[string]int, list string, i int) {
	switch {
	case name == "":
		ps.add(path, "must not be empty")
	case !validName(name):
		ps.add(path, "%s name %q may only hold letters, digits, _ and -", what, name)
	default:
		if j, dup := seen[name]; dup {
			ps.add(path, "duplicate %s %q (also %s[%d])", what, name, list, j)
			return
		}
		seen[name] = i
	}
}

// validName reports whether s matches ^[A-Za-z0-9_-]+$.
func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}

// checkHostPort checks a listen address of the form host:port (host may be
// empty for every interface).
func checkHostPort(ps *problems, path, addr string) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil || !validPort(port) {
		ps.add(path, "must be host:port, such as 127.0.0.1:8080, not %q", addr)
	}
}

// validPort reports whether s is a decimal port number in 0..65535.
func validPort(s string) bool {
	n, err := strconv.ParseUint(s, 10, 16)
	return err == nil && n <= 65535
}

// loopbackHostPort reports whether addr is host:port with a loopback host.
func loopbackHostPort(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || !validPort(port) {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkSecret checks a secret value (an API key or relay key) without
// ever quoting it.
func checkSecret(ps *problems, path, s string) {
	if s == "" {
		ps.add(path, "must not be empty")
		return
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			ps.add(path, "must not hold white space or control characters (check for a trailing newline)")
			return
		}
	}
}

// validSHA256Hex reports whether s is 64 hex digits.
func validSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// validateSchedule checks callbacks.retry_schedule and the deprecated
// callbacks.max_attempts. A job record must outlive the longest wait
// between two attempts, as each attempt is recorded in it.
func (c *Config) validateSchedule(ps *problems) {
	if m := c.Callbacks.MaxAttempts; m != nil && *m < 1 {
		ps.add("callbacks.max_attempts", "must be >= 1")
	}
	if m := c.Callbacks.MaxAttempts; m != nil && *m > 1 && len(c.Callbacks.RetrySchedule) == 0 {
		ps.add("callbacks.max_attempts", "needs a non-empty callbacks.retry_schedule (max_attempts is deprecated: the schedule sets the attempts)")
	}
	used := len(c.Callbacks.Schedule()) // max_attempts may leave delays unused
	for i, d := range c.Callbacks.RetrySchedule {
		p := fmt.Sprintf("callbacks.retry_schedule[%d]", i)
		switch {
		case d <= 0:
			ps.add(p, "must be > 0")
		case i < used && c.Jobs.ResultTTL > 0 && d >= c.Jobs.ResultTTL:
			ps.add(p, "%s must be shorter than jobs.result_ttl (%s), which keeps the job record between attempts; "+
				"shorten the schedule or lengthen result_ttl", d.Std(), c.Jobs.ResultTTL.Std())
		}
	}
}

// validateTracing checks the tracing block: an http(s) endpoint URL with
// a host, and a sample ratio within [0, 1].
func (c *Config) validateTracing(ps *problems) {
	t := c.Tracing
	if t.OTLPEndpoint != "" {
		u, err := url.Parse(t.OTLPEndpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			ps.add("tracing.otlp_endpoint", "must be an http(s) URL with a host and no credentials, like http://127.0.0.1:4318/v1/traces")
		}
	}
	if !(t.SampleRatio >= 0 && t.SampleRatio <= 1) {
		ps.add("tracing.sample_ratio", "must be between 0 and 1")
	}
}
