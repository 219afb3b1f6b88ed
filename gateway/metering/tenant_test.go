package metering

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaygw/relay/embeddednats"
	"github.com/relaygw/relay/embeddednats/natstest"
)

const (
	secretA = "relay-canary-tenant-a-6d1f0c"
	secretB = "relay-canary-tenant-b-93ae27"
)

// TestNamesMatchEmbeddedNATS: the stream and subjects the tenants'
// permissions name are the ones the Meter publishes to.
func TestNamesMatchEmbeddedNATS(t *testing.T) {
	if StreamName != embeddednats.UsageStream || SubjectPrefix != embeddednats.UsagePrefix {
		t.Errorf("metering publishes to %s %s*, embeddednats lets tenants read %s %s*",
			StreamName, SubjectPrefix, embeddednats.UsageStream, embeddednats.UsagePrefix)
	}
}

// TestTenantReadsOwnUsage: on the embedded server's client port a tenant
// (logged in with its relay key) reads its own usage events, with a core
// subscription and with a durable consumer named after its key, and is
// refused another tenant's; no event holds a secret.
func TestTenantReadsOwnUsage(t *testing.T) {
	srv := natstest.StartWith(t, embeddednats.Options{Listen: "127.0.0.1:0", Tenants: []embeddednats.Tenant{
		{Name: "team-a", SHA256: sha256.Sum256([]byte(secretA))},
		{Name: "team-b", SHA256: sha256.Sum256([]byte(secretB))},
	}})
	m := startMeter(t, openStore(t, natstest.JetStream(t, srv)), prometheus.NewRegistry())
	u, _ := url.Parse(srv.ClientURL())
	errs := make(chan error, 16)
	nc, err := nats.Connect("nats://"+secretA+"@"+u.Host, nats.CustomInboxPrefix("_INBOX.team-a"), nats.NoReconnect(),
		nats.PermissionErrOnSubscribe(true),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatalf("tenant connect: %v", err)
	}
	t.Cleanup(nc.Close)
	core, err := nc.SubscribeSync(Subject("team-a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	m.Record(call("team-b", "claude-x", ModeSync, usage))
	m.Record(call("team-a", "claude-x", ModeSync, usage))
	msg, err := core.NextMsg(waitLimit)
	if err != nil || !strings.Contains(string(msg.Data), `"key":"team-a"`) {
		t.Fatalf("core subscription got %v, %v; want team-a's event", msg, err)
	}

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	cons, err := js.CreateOrUpdateConsumer(ctx, StreamName, jetstream.ConsumerConfig{
		Durable: "team-a", FilterSubject: Subject("team-a"), AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("durable consumer named after the key: %v", err)
	}
	batch, err := cons.Fetch(5, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for msg := range batch.Messages() {
		n++
		var ev Event
		if err := json.Unmarshal(msg.Data(), &ev); err != nil || ev.Key != "team-a" {
			t.Errorf("durable consumer got %s (%v); want team-a's event", msg.Data(), err)
		}
		for _, secret := range []string{secretA, secretB} {
			if strings.Contains(string(msg.Data()), secret) {
				t.Errorf("an event holds a tenant's secret: %s", msg.Data())
			}
		}
		_ = msg.Ack()
	}
	if n != 1 {
		t.Errorf("durable consumer got %d events; want 1", n)
	}

	// Refused requests get no answer: a short wait says enough.
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := js.CreateOrUpdateConsumer(short, StreamName, jetstream.ConsumerConfig{
		Durable: "team-a", FilterSubject: Subject("team-b"), AckPolicy: jetstream.AckExplicitPolicy}); err == nil {
		t.Error("tenant team-a re-filtered its consumer to team-b's usage")
	}
	short2, cancel2 := context.WithTimeout(ctx, time.Second)
	defer cancel2()
	if _, err := js.CreateOrUpdateConsumer(short2, StreamName, jetstream.ConsumerConfig{
		Durable: "team-b", FilterSubject: Subject("team-b"), AckPolicy: jetstream.AckExplicitPolicy}); err == nil {
		t.Error("tenant team-a made a consumer of team-b's usage")
	}
	if _, err := nc.SubscribeSync(Subject("team-b")); err == nil {
		if err := nc.Flush(); err == nil {
			select {
			case err := <-errs:
				if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
					t.Errorf("subscribe to team-b's usage: %v", err)
				}
			case <-time.After(waitLimit):
				t.Error("tenant team-a subscribed to team-b's usage")
			}
		}
	}
}
