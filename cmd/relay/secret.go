package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaygw/relay/configs"
	"github.com/relaygw/relay/lanes/assets"
	"github.com/relaygw/relay/workers/callbacks"
)

// The KV bucket and key that hold the callback signing secret the relay
// generated because none was configured.
const (
	secretsBucket    = "RELAY_SECRETS"
	signingSecretKey = "callbacks.signing_secret"
)

// callbackSigner returns the signer for job callbacks. Callbacks are always
// signed: the configured callbacks.signing_secret when there is one, else a
// secret generated on the first start and kept in the KV bucket
// RELAY_SECRETS (file storage), so that restarts, and every relay sharing
// the NATS cluster, sign with the same one. The relay that generates it logs
// it once, for the operator to give to the receivers; it can be read again
// with a NATS user allowed to read that bucket, and is replaced by setting
// callbacks.signing_secret.
func callbackSigner(ctx context.Context, decl *assets.Declarer, c configs.Callbacks, log *slog.Logger) (*callbacks.Signer, error) {
	if secrets := c.SigningSecrets(); len(secrets) > 0 {
		s, err := callbacks.NewSigner(secrets...)
		if err != nil {
			return nil, fmt.Errorf("callbacks.signing_secret: %w", err)
		}
		return s, nil
	}
	// Read from the leader: relays starting together must agree.
	kv, err := decl.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: secretsBucket, History: 1, Storage: jetstream.FileStorage,
		Description: "relay: generated secrets (the callback signing secret when none is configured)",
	}, false)
	if err != nil {
		return nil, fmt.Errorf("callback signing secret: open %s: %w", secretsBucket, err)
	}
	secret, created, err := getOrCreateSecret(ctx, kv)
	if err != nil {
		return nil, err
	}
	if created {
		log.Warn("callbacks.signing_secret is not set: generated one and stored it in NATS; "+
			"give it to callback receivers to verify webhook-signature, or set callbacks.signing_secret to choose your own",
			"signing_secret", secret, "bucket", secretsBucket, "key", signingSecretKey)
	}
	s, err := callbacks.NewSigner(secret)
	if err != nil {
		return nil, fmt.Errorf("callback signing secret in %s: %w", secretsBucket, err)
	}
	return s, nil
}

// getOrCreateSecret reads the stored signing secret, or stores a new one.
// Create makes the first writer win, so relays starting together agree.
func getOrCreateSecret(ctx context.Context, kv jetstream.KeyValue) (secret string, created bool, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", false, fmt.Errorf("callback signing secret: %w", err)
	}
	fresh := callbacks.SecretPrefix + base64.StdEncoding.EncodeToString(b)
	if _, err := kv.Create(ctx, signingSecretKey, []byte(fresh)); err == nil {
		return fresh, true, nil
	} else if !assets.IsConflict(err) {
		return "", false, fmt.Errorf("callback signing secret: store: %w", err)
	}
	e, err := kv.Get(ctx, signingSecretKey)
	if err != nil {
		return "", false, fmt.Errorf("callback signing secret: read: %w", err)
	}
	return string(e.Value()), false, nil
}
