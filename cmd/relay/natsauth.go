package main

import (
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/embeddednats"
)

// natsAccess maps the configuration onto who may use the embedded
// server's client port: every relay key as a tenant (by its SHA-256, so
// key_sha256 works) and every nats.users entry.
func natsAccess(cfg *configs.Config) ([]embeddednats.Tenant, []embeddednats.User, error) {
	tenants := make([]embeddednats.Tenant, 0, len(cfg.Keys))
	for i, k := range cfg.Keys {
		sum, err := k.SecretSHA256()
		if err != nil {
			return nil, nil, fmt.Errorf("keys[%d]: %w", i, err)
		}
		tenants = append(tenants, embeddednats.Tenant{Name: k.Name, SHA256: sum})
	}
	users := make([]embeddednats.User, 0, len(cfg.NATS.Users))
	for _, u := range cfg.NATS.Users {
		users = append(users, embeddednats.User{
			Name: u.User, Password: u.Password, Nkey: u.Nkey, Publish: u.Publish, Subscribe: u.Subscribe,
		})
	}
	return tenants, users, nil
}

// natsClientOptions maps the credentials and TLS settings for nats.url
// onto nats.go options.
func natsClientOptions(c configs.NATS) ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case c.Credentials != "":
		opts = append(opts, nats.UserCredentials(c.Credentials))
	case c.NkeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(c.NkeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats.nkey_seed_file: %w", err)
		}
		opts = append(opts, o)
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	case c.Token != "":
		opts = append(opts, nats.Token(c.Token))
	}
	if c.TLS.CAFile != "" {
		opts = append(opts, nats.RootCAs(c.TLS.CAFile))
	}
	if c.TLS.CertFile != "" {
		opts = append(opts, nats.ClientCert(c.TLS.CertFile, c.TLS.KeyFile))
	}
	if c.TLS.Enabled() {
		opts = append(opts, nats.Secure())
	}
	return opts, nil
}
