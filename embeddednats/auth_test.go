package embeddednats_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"

	"github.com/relaygw/relay/embeddednats"
	"github.com/relaygw/relay/embeddednats/natstest"
	"github.com/relaygw/relay/lanes/jobs"
)

const (
	secretA    = "relay-key-team-a-6f1e"
	secretB    = "relay-key-team-b-92cd"
	readerPass = "reader-password"
	hashedPass = "hashed-password"
)

// authWorld is an embedded server holding the relay's streams and KV
// bucket, with two tenants and some static users on its client port.
type authWorld struct {
	srv    *embeddednats.Server
	js     jetstream.JetStream // the relay's own, in-process
	kv     jetstream.KeyValue
	nkey   nkeys.KeyPair
	host   string // host:port of the client port
	record []byte // the job record stored under job_1
}

func tenants() []embeddednats.Tenant {
	return []embeddednats.Tenant{
		{Name: "team-a", SHA256: sha256.Sum256([]byte(secretA))},
		{Name: "team-b", SHA256: sha256.Sum256([]byte(secretB))},
	}
}

func newAuthWorld(t *testing.T) *authWorld {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	hash, err := bcrypt.GenerateFromPassword([]byte(hashedPass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	srv := natstest.StartWith(t, embeddednats.Options{
		Listen:  "127.0.0.1:0",
		Tenants: tenants(),
		Users: []embeddednats.User{
			{Name: "results-reader", Password: readerPass, Subscribe: []string{"relay.results.>"}},
			{Name: "hashed", Password: string(hash), Subscribe: []string{"relay.results.>"}},
			{Name: "signer", Nkey: pub, Subscribe: []string{"relay.results.>"}},
		},
	})
	w := &authWorld{srv: srv, js: natstest.JetStream(t, srv), nkey: kp}
	u, _ := url.Parse(srv.ClientURL())
	w.host = u.Host
	ctx := t.Context()
	for _, sc := range []jetstream.StreamConfig{
		{Name: jobs.JobsStream, Subjects: []string{"relay.jobs.*"}, Retention: jetstream.WorkQueuePolicy},
		{Name: jobs.ResultsStream, Subjects: []string{"relay.results.>"}},
	} {
		if _, err := w.js.CreateStream(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	if w.kv, err = w.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: jobs.StateBucket}); err != nil {
		t.Fatal(err)
	}
	w.record = []byte(`{"id":"job_1","status":"succeeded"}`)
	if _, err := w.kv.Put(ctx, "job_1", w.record); err != nil {
		t.Fatal(err)
	}
	return w
}

// publishResult stores a result the way the relay does.
func (w *authWorld) publishResult(t *testing.T, key, id string) {
	t.Helper()
	if _, err := w.js.Publish(t.Context(), jobs.ResultSubject(key, id), []byte(id)); err != nil {
		t.Fatal(err)
	}
}

// msgs returns how many messages stream holds.
func (w *authWorld) msgs(t *testing.T, stream string) uint64 {
	t.Helper()
	st, err := w.js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	return st.CachedInfo().State.Msgs
}

// client is an outside connection that records the server's async errors.
type client struct {
	*nats.Conn
	js     jetstream.JetStream
	errs   chan error
	closed chan struct{}
}

func (w *authWorld) dial(t *testing.T, u string, opts ...nats.Option) (*client, error) {
	t.Helper()
	c := &client{errs: make(chan error, 64), closed: make(chan struct{})}
	all := append([]nats.Option{
		nats.NoReconnect(),
		nats.PermissionErrOnSubscribe(true),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case c.errs <- err:
			default:
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(c.closed) }),
	}, opts...)
	nc, err := nats.Connect(u, all...)
	if err != nil {
		return nil, err
	}
	t.Cleanup(nc.Close)
	c.Conn = nc
	c.js, _ = jetstream.New(nc)
	return c, nil
}

func (w *authWorld) mustDial(t *testing.T, u string, opts ...nats.Option) *client {
	t.Helper()
	c, err := w.dial(t, u, opts...)
	if err != nil {
		t.Fatalf("connect %s: %v", strings.Split(u, "@")[len(strings.Split(u, "@"))-1], err)
	}
	return c
}

// tenant connects with a relay key as token in the URL, as the docs show.
func (w *authWorld) tenant(t *testing.T, name, secret string) *client {
	t.Helper()
	return w.mustDial(t, "nats://"+secret+"@"+w.host, nats.CustomInboxPrefix("_INBOX."+name))
}

// refused runs op and waits for the server to report a permissions
// violation naming subject; then it stops op.
func (c *client) refused(t *testing.T, subject string, op func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- op(ctx) }()
	defer func() { cancel(); <-done }()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case err := <-c.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `to "`+subject+`"`) {
				return
			}
		case <-timeout:
			t.Fatalf("no permissions violation for %q", subject)
		}
	}
}

func TestAuthConnect(t *testing.T) {
	w := newAuthWorld(t)
	pub, _ := w.nkey.PublicKey()
	sign := func(nonce []byte) ([]byte, error) { return w.nkey.Sign(nonce) }
	other, _ := nkeys.CreateUser()
	otherPub, _ := other.PublicKey()
	otherSign := func(nonce []byte) ([]byte, error) { return other.Sign(nonce) }
	base := "nats://" + w.host
	tests := []struct {
		name string
		url  string
		opts []nats.Option
		ok   bool
	}{
		{name: "no credentials", url: base},
		{name: "wrong token", url: "nats://not-a-key@" + w.host},
		{name: "tenant token in URL", url: "nats://" + secretA + "@" + w.host, ok: true},
		{name: "tenant token option", url: base, opts: []nats.Option{nats.Token(secretB)}, ok: true},
		{name: "tenant key as password", url: base, opts: []nats.Option{nats.UserInfo("team-a", secretA)}, ok: true},
		{name: "wrong password for a tenant", url: base, opts: []nats.Option{nats.UserInfo("team-a", "nope")}},
		{name: "user", url: base, opts: []nats.Option{nats.UserInfo("results-reader", readerPass)}, ok: true},
		{name: "user with a wrong password", url: base, opts: []nats.Option{nats.UserInfo("results-reader", "nope")}},
		{name: "user name with a tenant key", url: base, opts: []nats.Option{nats.UserInfo("results-reader", secretA)}},
		{name: "bcrypt user", url: base, opts: []nats.Option{nats.UserInfo("hashed", hashedPass)}, ok: true},
		{name: "bcrypt user with the hash", url: base, opts: []nats.Option{nats.UserInfo("hashed", "$2a$04$x")}},
		{name: "nkey user", url: base, opts: []nats.Option{nats.Nkey(pub, sign)}, ok: true},
		{name: "unknown nkey", url: base, opts: []nats.Option{nats.Nkey(otherPub, otherSign)}},
		{name: "nkey signed by another seed", url: base, opts: []nats.Option{nats.Nkey(pub, otherSign)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := w.dial(t, tt.url, tt.opts...)
			if tt.ok && err != nil {
				t.Fatalf("connect: %v; want ok", err)
			}
			if !tt.ok {
				if err == nil {
					c.Close()
					t.Fatal("connect ok; want refused")
				}
				if !errors.Is(err, nats.ErrAuthorization) {
					t.Fatalf("connect: %v; want an authorization error", err)
				}
			}
		})
	}
}

func TestAuthTenantReadsOwnResults(t *testing.T) {
	w := newAuthWorld(t)
	a := w.tenant(t, "team-a", secretA)
	sub, err := a.SubscribeSync("relay.results.team-a.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	w.publishResult(t, "team-b", "job_b1")
	w.publishResult(t, "team-a", "job_a1")
	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil || string(msg.Data) != "job_a1" {
		t.Fatalf("core subscription got %v, %v; want team-a's job_a1 only", msg, err)
	}

	ctx := t.Context()
	cons, err := a.js.CreateOrUpdateConsumer(ctx, jobs.ResultsStream, jetstream.ConsumerConfig{
		Durable: "team-a", FilterSubject: "relay.results.team-a.>", AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatalf("durable consumer named after the key: %v", err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if m.Subject() != "relay.results.team-a.job_a1" {
			t.Errorf("durable consumer got %s; want team-a's result", m.Subject())
		}
		if err := m.DoubleAck(ctx); err != nil {
			t.Errorf("ack: %v", err)
		}
	}
	if err := batch.Error(); err != nil {
		t.Fatal(err)
	}
	if info, err := cons.Info(ctx); err != nil || info.AckFloor.Stream == 0 {
		t.Fatalf("consumer info %v, %v; want the message acknowledged", info, err)
	}
	if err := a.js.DeleteConsumer(ctx, jobs.ResultsStream, "team-a"); err != nil {
		t.Fatalf("delete own consumer: %v", err)
	}
}

// TestAuthTenantRefused covers what a tenant must not do: read another
// tenant's results, touch the jobs stream or the KV buckets, forge results
// or jobs, delete or purge streams, or use another tenant's consumer.
func TestAuthTenantRefused(t *testing.T) {
	w := newAuthWorld(t)
	w.publishResult(t, "team-a", "job_a1")
	a := w.tenant(t, "team-a", secretA)
	b := w.tenant(t, "team-b", secretB)
	ctx := t.Context()
	// A's durable consumer exists: B must neither read from it nor
	// re-filter it, even knowing its name.
	if _, err := a.js.CreateOrUpdateConsumer(ctx, jobs.ResultsStream, jetstream.ConsumerConfig{
		Durable: "team-a", FilterSubject: "relay.results.team-a.>", AckPolicy: jetstream.AckExplicitPolicy,
	}); err != nil {
		t.Fatal(err)
	}
	sub := func(c *client, subj string) func(context.Context) error {
		return func(ctx context.Context) error {
			s, err := c.SubscribeSync(subj)
			if err != nil {
				return err
			}
			_, err = s.NextMsgWithContext(ctx)
			return err
		}
	}
	pub := func(c *client, subj string) func(context.Context) error {
		return func(context.Context) error { return c.Publish(subj, []byte(`{"forged":true}`)) }
	}
	results, jobsMsgs := w.msgs(t, jobs.ResultsStream), w.msgs(t, jobs.JobsStream)
	tests := []struct {
		name    string
		c       *client
		subject string
		op      func(context.Context) error
	}{
		{"other tenant's results", b, "relay.results.team-a.>", sub(b, "relay.results.team-a.>")},
		{"all results", a, "relay.results.>", sub(a, "relay.results.>")},
		{"every inbox", b, "_INBOX.>", sub(b, "_INBOX.>")},
		{"other tenant's inbox", b, "_INBOX.team-a.>", sub(b, "_INBOX.team-a.>")},
		{"relay's inbox", a, "_RELAY_INBOX.>", sub(a, "_RELAY_INBOX.>")},
		{"jobs subjects", a, "relay.jobs.*", sub(a, "relay.jobs.*")},
		{"KV subjects", a, "$KV.>", sub(a, "$KV.>")},
		{"forged job", a, "relay.jobs.batch", pub(a, "relay.jobs.batch")},
		{"forged result", b, "relay.results.team-a.job_x", pub(b, "relay.results.team-a.job_x")},
		{"forged own result", a, "relay.results.team-a.job_x", pub(a, "relay.results.team-a.job_x")},
		{"overwrite job record", b, "$KV." + jobs.StateBucket + ".job_1", pub(b, "$KV."+jobs.StateBucket+".job_1")},
		{"open KV bucket", a, "$JS.API.STREAM.INFO.KV_" + jobs.StateBucket, func(ctx context.Context) error {
			_, err := a.js.KeyValue(ctx, jobs.StateBucket)
			return err
		}},
		{"jobs stream info", a, "$JS.API.STREAM.INFO." + jobs.JobsStream, func(ctx context.Context) error {
			_, err := a.js.Stream(ctx, jobs.JobsStream)
			return err
		}},
		{"delete results stream", a, "$JS.API.STREAM.DELETE." + jobs.ResultsStream, func(ctx context.Context) error {
			return a.js.DeleteStream(ctx, jobs.ResultsStream)
		}},
		{"delete jobs stream", b, "$JS.API.STREAM.DELETE." + jobs.JobsStream, func(ctx context.Context) error {
			return b.js.DeleteStream(ctx, jobs.JobsStream)
		}},
		{"purge results", a, "$JS.API.STREAM.PURGE." + jobs.ResultsStream, pub(a, "$JS.API.STREAM.PURGE."+jobs.ResultsStream)},
		{"account info", a, "$JS.API.INFO", func(ctx context.Context) error { _, err := a.js.AccountInfo(ctx); return err }},
		{"consumer on jobs", a, "$JS.API.CONSUMER.CREATE." + jobs.JobsStream + ".team-a.relay.jobs.batch", func(ctx context.Context) error {
			_, err := a.js.CreateOrUpdateConsumer(ctx, jobs.JobsStream, jetstream.ConsumerConfig{Durable: "team-a", FilterSubject: "relay.jobs.batch"})
			return err
		}},
		{"own consumer on other results", a, "$JS.API.CONSUMER.CREATE." + jobs.ResultsStream + ".team-a.relay.results.team-b.>", func(ctx context.Context) error {
			_, err := a.js.CreateOrUpdateConsumer(ctx, jobs.ResultsStream, jetstream.ConsumerConfig{Durable: "team-a", FilterSubject: "relay.results.team-b.>"})
			return err
		}},
		{"consumer with another name", a, "$JS.API.CONSUMER.CREATE." + jobs.ResultsStream + ".mine.relay.results.team-a.>", func(ctx context.Context) error {
			_, err := a.js.CreateOrUpdateConsumer(ctx, jobs.ResultsStream, jetstream.ConsumerConfig{Durable: "mine", FilterSubject: "relay.results.team-a.>"})
			return err
		}},
		{"consumer without filter", a, "$JS.API.CONSUMER.CREATE." + jobs.ResultsStream + ".team-a", func(ctx context.Context) error {
			_, err := a.js.CreateOrUpdateConsumer(ctx, jobs.ResultsStream, jetstream.ConsumerConfig{Durable: "team-a"})
			return err
		}},
		{"squat other tenant's consumer name", b, "$JS.API.CONSUMER.CREATE." + jobs.ResultsStream + ".team-a.relay.results.team-b.>", func(ctx context.Context) error {
			_, err := b.js.CreateOrUpdateConsumer(ctx, jobs.ResultsStream, jetstream.ConsumerConfig{Durable: "team-a", FilterSubject: "relay.results.team-b.>"})
			return err
		}},
		{"other tenant's consumer info", b, "$JS.API.CONSUMER.INFO." + jobs.ResultsStream + ".team-a", func(ctx context.Context) error {
			_, err := b.js.Consumer(ctx, jobs.ResultsStream, "team-a")
			return err
		}},
		{"pull from other tenant's consumer", b, "$JS.API.CONSUMER.MSG.NEXT." + jobs.ResultsStream + ".team-a", func(ctx context.Context) error {
			_, err := b.RequestWithContext(ctx, "$JS.API.CONSUMER.MSG.NEXT."+jobs.ResultsStream+".team-a", []byte(`{"batch":1}`))
			return err
		}},
		{"delete other tenant's consumer", b, "$JS.API.CONSUMER.DELETE." + jobs.ResultsStream + ".team-a", func(ctx context.Context) error {
			return b.js.DeleteConsumer(ctx, jobs.ResultsStream, "team-a")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.c.refused(t, tt.subject, tt.op) })
	}

	// Nothing was forged or deleted.
	if got := w.msgs(t, jobs.ResultsStream); got != results {
		t.Errorf("%s holds %d messages; want %d", jobs.ResultsStream, got, results)
	}
	if got := w.msgs(t, jobs.JobsStream); got != jobsMsgs {
		t.Errorf("%s holds %d messages; want %d", jobs.JobsStream, got, jobsMsgs)
	}
	if e, err := w.kv.Get(ctx, "job_1"); err != nil || string(e.Value()) != string(w.record) {
		t.Errorf("job record = %v, %v; want it unchanged", e, err)
	}
	ci, err := w.js.Consumer(ctx, jobs.ResultsStream, "team-a")
	if err != nil || ci.CachedInfo().Config.FilterSubject != "relay.results.team-a.>" || ci.CachedInfo().NumPending != 1 {
		t.Errorf("team-a's consumer = %+v, %v; want it untouched with team-a's result pending", ci, err)
	}
}

func TestAuthReadOnlyUser(t *testing.T) {
	w := newAuthWorld(t)
	r := w.mustDial(t, "nats://"+w.host, nats.UserInfo("results-reader", readerPass))
	sub, err := r.SubscribeSync("relay.results.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	w.publishResult(t, "team-a", "job_a1")
	w.publishResult(t, "team-b", "job_b1")
	for _, want := range []string{"job_a1", "job_b1"} {
		if m, err := sub.NextMsg(5 * time.Second); err != nil || string(m.Data) != want {
			t.Fatalf("reader got %v, %v; want %s", m, err, want)
		}
	}
	pub := func(subj string) func(context.Context) error {
		return func(context.Context) error { return r.Publish(subj, []byte("x")) }
	}
	for _, subj := range []string{"relay.results.team-a.job_x", "relay.jobs.batch", "$KV." + jobs.StateBucket + ".job_1",
		"$JS.API.STREAM.DELETE." + jobs.ResultsStream, "$JS.API.INFO"} {
		t.Run("publish "+subj, func(t *testing.T) { r.refused(t, subj, pub(subj)) })
	}
	t.Run("subscribe to KV", func(t *testing.T) {
		r.refused(t, "$KV.>", func(ctx context.Context) error {
			s, err := r.SubscribeSync("$KV.>")
			if err != nil {
				return err
			}
			_, err = s.NextMsgWithContext(ctx)
			return err
		})
	})
}

// TestAuthSetAccess removes a tenant and a user at run time: new
// connections are refused and open ones are closed; the others stay.
func TestAuthSetAccess(t *testing.T) {
	w := newAuthWorld(t)
	a := w.tenant(t, "team-a", secretA)
	b := w.tenant(t, "team-b", secretB)
	r := w.mustDial(t, "nats://"+w.host, nats.UserInfo("results-reader", readerPass))
	if err := w.srv.SetAccess(tenants()[:1], nil); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*client{"removed tenant": b, "removed user": r} {
		select {
		case <-c.closed:
		case <-time.After(10 * time.Second):
			t.Errorf("%s: open connection not closed", name)
		}
	}
	if err := a.Flush(); err != nil || !a.IsConnected() {
		t.Errorf("kept tenant: %v; want still connected", err)
	}
	if _, err := w.dial(t, "nats://"+secretB+"@"+w.host); !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("removed tenant connects: %v; want an authorization error", err)
	}
	// A key whose secret changes under the same name is a new key.
	rotated := []embeddednats.Tenant{{Name: "team-a", SHA256: sha256.Sum256([]byte("rotated"))}}
	if err := w.srv.SetAccess(rotated, nil); err != nil {
		t.Fatal(err)
	}
	<-a.closed
	if _, err := w.dial(t, "nats://rotated@"+w.host); err != nil {
		t.Errorf("rotated key: %v", err)
	}
	if err := w.srv.SetAccess([]embeddednats.Tenant{{Name: "a.b"}}, nil); !errors.Is(err, embeddednats.ErrInvalidOptions) {
		t.Errorf("SetAccess with a bad name = %v; want ErrInvalidOptions", err)
	}
}

// TestAuthNamesMatchJobs keeps the names tenants are allowed in step with
// the ones lanes/jobs uses.
func TestAuthNamesMatchJobs(t *testing.T) {
	if embeddednats.ResultsStream != jobs.ResultsStream {
		t.Errorf("ResultsStream = %q; jobs uses %q", embeddednats.ResultsStream, jobs.ResultsStream)
	}
	if got := jobs.ResultSubject("k", "id"); !strings.HasPrefix(got, embeddednats.ResultsPrefix+"k.") {
		t.Errorf("jobs.ResultSubject = %q; want prefix %q", got, embeddednats.ResultsPrefix)
	}
}
