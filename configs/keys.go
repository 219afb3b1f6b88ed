package configs

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
)

// SecretSHA256 returns the SHA-256 of the key's secret: the hash of Key when
// it is set, else KeySHA256 decoded from hex. Relay keys are compared by
// this hash (in constant time, with crypto/subtle). The error never holds
// the secret.
func (k Key) SecretSHA256() ([32]byte, error) {
	var sum [32]byte
	switch {
	case k.Key != "" && k.KeySHA256 != "":
		return sum, fmt.Errorf("key %q: both key and key_sha256 are set", k.Name)
	case k.Key != "":
		return sha256.Sum256([]byte(k.Key)), nil
	case k.KeySHA256 == "":
		return sum, fmt.Errorf("key %q: neither key nor key_sha256 is set", k.Name)
	}
	if len(k.KeySHA256) != 2*len(sum) {
		return sum, fmt.Errorf("key %q: key_sha256 must be 64 hex digits", k.Name)
	}
	if _, err := hex.Decode(sum[:], []byte(k.KeySHA256)); err != nil {
		return [32]byte{}, fmt.Errorf("key %q: key_sha256 must be 64 hex digits", k.Name)
	}
	return sum, nil
}

// validateKeys checks the keys list.
func (c *Config) validateKeys(ps *problems) {
	if len(c.Keys) == 0 {
		ps.add("keys", "must not be empty (no client could authenticate)")
	}
	names := make(map[string]int)
	secrets := make(map[[32]byte]int)
	for i, k := range c.Keys {
		p := fmt.Sprintf("keys[%d]", i)
		checkName(ps, p+".name", "key", k.Name, names, "keys", i)
		secretPath := p + ".key"
		switch {
		case k.Key != "" && k.KeySHA256 != "":
			ps.add(p, "set exactly one of key and key_sha256, not both")
		case k.Key == "" && k.KeySHA256 == "":
			ps.add(p, "set exactly one of key and key_sha256")
		case k.Key != "":
			checkSecret(ps, secretPath, k.Key)
		default:
			secretPath = p + ".key_sha256"
			if !validSHA256Hex(k.KeySHA256) {
				ps.add(secretPath, "must be 64 hex digits (the SHA-256 of the key)")
			}
		}
		if sum, err := k.SecretSHA256(); err == nil {
			if j, dup := secrets[sum]; dup {
				ps.add(secretPath, "same secret as keys[%d]", j)
			} else {
				secrets[sum] = i
			}
		}
		c.checkKeyAccess(ps, p, k)
		CheckKeyLimits(ps.adder(p), k.KeyLimits, k.Budget)
	}
}

// CheckKeyLimits calls bad with the field and the reason for every
// problem of a key's limits and budget (the admin API checks keys made at
// run time with it too).
func CheckKeyLimits(bad func(field, reason string), l KeyLimits, b *Budget) {
	for _, f := range []struct {
		name string
		v    int
	}{{"rpm", l.RPM}, {"input_tpm", l.InputTPM}, {"output_tpm", l.OutputTPM}, {"max_concurrency", l.MaxConcurrency}} {
		if f.v < 0 {
			bad(f.name, "must be >= 0")
		}
	}
	if b == nil {
		return
	}
	switch {
	case b.USD < 0 || math.IsNaN(b.USD) || math.IsInf(b.USD, 0):
		bad("budget.usd", "must be a positive number")
	case b.Tokens < 0:
		bad("budget.tokens", "must be > 0")
	case b.USD > 0 && b.Tokens > 0:
		bad("budget", "set one of usd and tokens, not both")
	case b.USD == 0 && b.Tokens == 0:
		bad("budget", "set usd or tokens (> 0)")
	}
	switch b.Period {
	case BudgetDay, BudgetMonth, BudgetTotal:
	case "":
		bad("budget.period", "must be set to day, month or total")
	default:
		bad("budget.period", fmt.Sprintf("must be day, month or total, not %q", b.Period))
	}
}

// checkKeyAccess checks a key's lanes, default lane and routes.
func (c *Config) checkKeyAccess(ps *problems, p string, k Key) {
	c.CheckKeyAccess(ps.adder(p), k)
}

// CheckKeyAccess calls bad with the field ("lanes[1]", "default_lane",
// "routes[0]") and the reason for every lane or route k names that c
// does not have (the admin API checks keys made at run time with it too).
func (c *Config) CheckKeyAccess(bad func(field, reason string), k Key) {
	for j, l := range k.Lanes {
		if _, ok := c.Lane(l); !ok {
			bad(fmt.Sprintf("lanes[%d]", j), fmt.Sprintf("unknown lane %q", l))
		}
	}
	if k.DefaultLane != "" {
		if _, ok := c.Lane(k.DefaultLane); !ok {
			bad("default_lane", fmt.Sprintf("unknown lane %q", k.DefaultLane))
		} else if len(k.Lanes) > 0 && !slices.Contains(k.Lanes, k.DefaultLane) {
			bad("default_lane", fmt.Sprintf("lane %q is not in the key's lanes", k.DefaultLane))
		}
	}
	for j, r := range k.Routes {
		if r == "*" {
			continue
		}
		if _, ok := c.Route(r); !ok {
			bad(fmt.Sprintf("routes[%d]", j), fmt.Sprintf("unknown route %q (use \"*\" for every route)", r))
		}
	}
}

// Lane returns the lane called name.
func (c *Config) Lane(name string) (Lane, bool) {
	for _, l := range c.Lanes {
		if l.Name == name {
			return l, true
		}
	}
	return Lane{}, false
}

// Provider returns the provider called name.
func (c *Config) Provider(name string) (Provider, bool) {
	for _, p := range c.Providers {
		if p.Name == name {
			return p, true
		}
	}
	return Provider{}, false
}

// Route returns the route for the model a client sends. The returned
// route's slices are copies, so the caller may keep or change them.
func (c *Config) Route(model string) (Route, bool) {
	for _, r := range c.Routes {
		if r.Model == model {
			r.Targets = slices.Clone(r.Targets)
			r.Fallbacks = slices.Clone(r.Fallbacks)
			return r, true
		}
	}
	return Route{}, false
}

// ValidKeyName reports whether s may name a key: letters, digits, _ and -
// (one NATS subject token, one KV key).
func ValidKeyName(s string) bool { return validName(s) }
