package main

import (
	"slices"
	"testing"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/gateway"
	"github.com/relaygw/relay/workers/keylimits"
)

// TestLeasedKeys: the limits of keys made at run time are leased like
// the file's (without a lease each relay would hold them in full); a key
// without limits is not, and a file key's name wins.
func TestLeasedKeys(t *testing.T) {
	l := &leases{quotas: &gateway.Quotas{Limits: keylimits.New(keylimits.Options{})}}
	cfg := &configs.Config{Keys: []configs.Key{
		{Name: "file", KeyLimits: configs.KeyLimits{RPM: 60}},
		{Name: "open"},
	}}
	runtime := []gateway.Key{
		{Name: "api", Limits: configs.KeyLimits{MaxConcurrency: 2}},
		{Name: "file", Limits: configs.KeyLimits{RPM: 1}},
		{Name: "api-open"},
	}
	var got []string
	for _, r := range l.keyResources(cfg, runtime) {
		got = append(got, r.Name)
		if r.Name == "file" && r.Limits.RPM != 60 {
			t.Errorf("file key leased with rpm %d; want the file's 60", r.Limits.RPM)
		}
	}
	if want := []string{"file", "api"}; !slices.Equal(got, want) {
		t.Errorf("leased keys = %v; want %v", got, want)
	}
}
