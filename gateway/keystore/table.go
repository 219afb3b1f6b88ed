package keystore

import (
	"slices"
	"time"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/gateway"
)

// GatewayKeys returns the keys the gateway accepts from recs under cfg at
// now: revoked keys and keys shadowed by a configuration key of the same
// name left out, a rotated secret only within its grace period.
//
// A key is checked against the configuration when it is made or changed;
// a later reload may drop a lane or a route it names. The key then keeps
// working without it: a lane gone from the configuration is dropped from
// its lanes (a request naming it gets the usual unknown-lane answer), a
// default lane gone falls back to the first lane, in priority order, the
// key may still use, and a route gone matches no model. GET
// /admin/keys/{name} lists such names under "problems". Empty lanes mean
// every lane, empty routes every route, as in the file.
func GatewayKeys(recs []Record, cfg *configs.Config, now time.Time) []gateway.Key {
	out := make([]gateway.Key, 0, len(recs))
	for _, r := range recs {
		if r.Revoked {
			continue
		}
		if _, shadowed := configKey(cfg, r.Name); shadowed {
			continue
		}
		sum, err := r.Sum()
		if err != nil {
			continue
		}
		k := gateway.Key{Name: r.Name, SHA256: sum, Routes: r.Routes, Limits: r.KeyLimits, Budget: r.Budget}
		if len(k.Routes) == 0 {
			k.Routes = []string{"*"}
		}
		for _, l := range cfg.Lanes {
			if len(r.Lanes) == 0 || slices.Contains(r.Lanes, l.Name) {
				k.Lanes = append(k.Lanes, l.Name)
			}
		}
		k.DefaultLane = r.DefaultLane
		if !slices.Contains(k.Lanes, k.DefaultLane) {
			k.DefaultLane = ""
			if len(k.Lanes) > 0 {
				k.DefaultLane = k.Lanes[0]
			}
		}
		if prev, ok := r.PrevSum(now); ok {
			k.Grace = &gateway.GraceSecret{SHA256: prev, Until: r.PrevUntil}
		}
		out = append(out, k)
	}
	return out
}
