// Package assets declares the JetStream streams, KV buckets and durable
// consumers that several relays share, with one convergence rule so that
// relays with different settings never fight over them:
//
//   - what is missing is created with this relay's settings;
//   - what exists is only ever made safer: replicas and retention (max
//     age, the duplicates window, message limits) are raised to this
//     relay's settings when those are larger, never lowered; direct gets
//     (reads any replica may answer) are turned off, never on;
//   - every change is logged with its old and new value;
//   - when this relay asks for less than the cluster has (a shorter
//     result_ttl, fewer replicas), the cluster's value is kept, a warning
//     is logged and relay_nats_asset_drift{asset} is 1 (0 once they
//     agree).
//
// Lowering replicas or retention is an operator's explicit act: lower the
// setting on every relay, then edit the stream with the nats CLI (nats
// stream edit); relays then leave it alone.
package assets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Declarer.
type Options struct {
	// Replicas is the replica count of every stream, bucket and consumer
	// declared (nats.replicas); 0 means 1.
	Replicas int
	// Logger logs changes and drift; nil discards.
	Logger *slog.Logger
	// Registry registers relay_nats_asset_drift; nil registers none.
	Registry prometheus.Registerer
}

// Declarer declares shared JetStream assets by the package's rule. It is
// safe for concurrent use; one per process (its metric is registered
// once).
type Declarer struct {
	js       jetstream.JetStream
	replicas int
	log      *slog.Logger
	drift    *prometheus.GaugeVec

	mu     sync.Mutex
	drifts map[string]string // asset -> what differs
}

// New returns a Declarer over js.
func New(js jetstream.JetStream, o Options) *Declarer {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	d := &Declarer{js: js, replicas: o.Replicas, log: o.Logger, drifts: map[string]string{},
		drift: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "relay_nats_asset_drift",
			Help: "1 when this relay's configuration asks for less than a shared JetStream stream or bucket has (fewer replicas, shorter retention): the cluster's larger value is kept."},
			[]string{"asset"})}
	if o.Registry != nil {
		o.Registry.MustRegister(d.drift)
	}
	return d
}

// Replicas returns the replica count the Declarer gives assets.
func (d *Declarer) Replicas() int { return d.replicas }

// Drift returns the assets whose shape this relay's configuration
// disagrees with, and how (for logs and readiness details).
func (d *Declarer) Drift() map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]string, len(d.drifts))
	for k, v := range d.drifts {
		out[k] = v
	}
	return out
}

// Stream creates cfg's stream when missing (with Replicas set to the
// Declarer's when cfg leaves it 0), else converges the existing one
// towards cfg by the package's rule.
func (d *Declarer) Stream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = d.replicas
	}
	for range 3 {
		st, err := d.js.Stream(ctx, cfg.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			st, err = d.js.CreateStream(ctx, cfg)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				continue // another relay created it meanwhile
			}
			if err == nil {
				d.log.Info("created stream", "stream", cfg.Name, "replicas", cfg.Replicas, "max_age_s", cfg.MaxAge.Seconds())
				d.setDrift(cfg.Name, nil)
			}
			return st, err
		}
		if err != nil {
			return nil, err
		}
		return d.converge(ctx, st, shapeOf(&cfg))
	}
	return nil, fmt.Errorf("stream %s: created and deleted concurrently", cfg.Name)
}

// KeyValue creates cfg's bucket when missing, converges the existing one
// by the package's rule, and returns it. With direct false, reads go to
// the bucket stream's leader (no replica that may lag answers them), so
// a read sees every write acknowledged before it.
func (d *Declarer) KeyValue(ctx context.Context, cfg jetstream.KeyValueConfig, direct bool) (jetstream.KeyValue, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = d.replicas
	}
	_, err := d.js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if err = d.createBucket(ctx, cfg, direct); err == nil {
			d.log.Info("created bucket", "bucket", cfg.Bucket, "replicas", cfg.Replicas, "ttl_s", cfg.TTL.Seconds(), "direct_get", direct)
		} else if !errors.Is(err, jetstream.ErrBucketExists) && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	st, err := d.streamSoon(ctx, "KV_"+cfg.Bucket)
	if err != nil {
		return nil, err
	}
	want := shape{replicas: cfg.Replicas, maxAge: cfg.TTL, direct: &direct}
	if _, err := d.converge(ctx, st, want); err != nil {
		return nil, err
	}
	// Bound again: a handle reads with direct get as the stream allowed
	// it when bound.
	return d.js.KeyValue(ctx, cfg.Bucket)
}

// streamSoonWait bounds how long streamSoon waits for a stream just
// created to be found.
const streamSoonWait = 5 * time.Second

// streamSoon returns the stream name, which was just created (here or
// by another relay): on a cluster, a stream whose creation was
// acknowledged can still be answered "not found" (10059) for a moment,
// until its replicas have formed their group; that is retried for up to
// streamSoonWait.
func (d *Declarer) streamSoon(ctx context.Context, name string) (jetstream.Stream, error) {
	deadline := time.Now().Add(streamSoonWait)
	for {
		st, err := d.js.Stream(ctx, name)
		if !errors.Is(err, jetstream.ErrStreamNotFound) || time.Now().After(deadline) {
			return st, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// createBucket creates cfg's bucket. nats.go's CreateKeyValue always
// allows direct gets; without direct the bucket's stream is created here
// with the configuration CreateKeyValue would give it (history, TTL, the
// duplicates window of min(TTL, 2 min), rollups, no deletes, discard
// new, per-key TTLs when it has limit markers), but direct gets off from the start, so no handle ever binds to it
// with direct gets and converge has nothing to change (no warning on a
// fresh store).
func (d *Declarer) createBucket(ctx context.Context, cfg jetstream.KeyValueConfig, direct bool) error {
	if direct {
		_, err := d.js.CreateKeyValue(ctx, cfg)
		return err
	}
	if cfg.Mirror != nil || len(cfg.Sources) > 0 {
		return fmt.Errorf("bucket %s: mirrors and sources need direct gets here", cfg.Bucket)
	}
	history := int64(max(cfg.History, 1))
	dup := 2 * time.Minute
	if cfg.TTL > 0 && cfg.TTL < dup {
		dup = cfg.TTL
	}
	unlimited := func(n int64) int64 {
		if n == 0 {
			return -1
		}
		return n
	}
	var compression jetstream.StoreCompression
	if cfg.Compression {
		compression = jetstream.S2Compression
	}
	_, err := d.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "KV_" + cfg.Bucket, Description: cfg.Description, Subjects: []string{"$KV." + cfg.Bucket + ".>"},
		MaxMsgsPerSubject: history, MaxBytes: unlimited(cfg.MaxBytes), MaxAge: cfg.TTL,
		MaxMsgSize: int32(unlimited(int64(cfg.MaxValueSize))), Storage: cfg.Storage, Replicas: cfg.Replicas,
		Placement: cfg.Placement, AllowRollup: true, DenyDelete: true, Duplicates: dup, MaxMsgs: -1,
		MaxConsumers: -1, AllowDirect: false, RePublish: cfg.RePublish, Compression: compression,
		Discard: jetstream.DiscardNew, Metadata: cfg.Metadata,
		// Per-key TTLs (limit markers), as CreateKeyValue sets them up.
		AllowMsgTTL: cfg.LimitMarkerTTL != 0, SubjectDeleteMarkerTTL: cfg.LimitMarkerTTL,
	})
	return err
}

// Consumer creates or updates a durable consumer on stream with cfg. Its
// replicas follow the stream's (0: inherited, also when the stream is
// scaled later); an existing consumer keeps the replica count it has.
func (d *Declarer) Consumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	st, err := d.streamSoon(ctx, stream)
	if err != nil {
		return nil, err
	}
	cfg.Replicas = 0
	c, err := st.Consumer(ctx, cfg.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return st.CreateOrUpdateConsumer(ctx, cfg)
	}
	if err != nil {
		return nil, err
	}
	have := c.CachedInfo().Config
	cfg.Replicas = have.Replicas
	if have.AckWait == cfg.AckWait && have.MaxAckPending == cfg.MaxAckPending && have.MaxDeliver == cfg.MaxDeliver &&
		have.Description == cfg.Description {
		return c, nil
	}
	d.log.Info("updating consumer", "stream", stream, "consumer", cfg.Durable,
		"ack_wait_s", fmt.Sprintf("%g -> %g", have.AckWait.Seconds(), cfg.AckWait.Seconds()),
		"max_ack_pending", fmt.Sprintf("%d -> %d", have.MaxAckPending, cfg.MaxAckPending))
	return st.UpdateConsumer(ctx, cfg)
}

// shape is what the rule compares of a stream: the settings relays may
// disagree on.
type shape struct {
	replicas   int
	maxAge     time.Duration // 0: unlimited
	duplicates time.Duration
	maxMsgs    int64 // <= 0: unlimited
	direct     *bool // nil: not this relay's concern
}

func shapeOf(c *jetstream.StreamConfig) shape {
	return shape{replicas: c.Replicas, maxAge: c.MaxAge, duplicates: c.Duplicates, maxMsgs: c.MaxMsgs}
}

// converge applies the rule to st: it raises what want has more of,
// logs each change, and records drift where want has less.
func (d *Declarer) converge(ctx context.Context, st jetstream.Stream, want shape) (jetstream.Stream, error) {
	cur := st.CachedInfo().Config
	next := cur
	var changes, drift []string
	note := func(field string, have, wantV, merged any) {
		if _, ok := have.(time.Duration); ok { // in seconds, as every logged duration
			field += "_s"
			have, wantV, merged = have.(time.Duration).Seconds(), wantV.(time.Duration).Seconds(), merged.(time.Duration).Seconds()
		}
		if fmt.Sprint(merged) != fmt.Sprint(have) {
			changes = append(changes, fmt.Sprintf("%s %v -> %v", field, have, merged))
		}
		if fmt.Sprint(merged) != fmt.Sprint(wantV) {
			drift = append(drift, fmt.Sprintf("%s: this relay asks for %v, the cluster keeps %v", field, wantV, merged))
		}
	}
	if want.replicas > 0 {
		next.Replicas = max(cur.Replicas, want.replicas)
		note("replicas", cur.Replicas, want.replicas, next.Replicas)
	}
	if want.maxAge >= 0 && (want.maxAge != 0 || cur.MaxAge != 0) {
		next.MaxAge = longer(cur.MaxAge, want.maxAge)
		note("max_age", cur.MaxAge, want.maxAge, next.MaxAge)
	}
	if want.duplicates > 0 {
		next.Duplicates = max(cur.Duplicates, want.duplicates)
		if next.MaxAge > 0 {
			next.Duplicates = min(next.Duplicates, next.MaxAge)
		}
		note("duplicates", cur.Duplicates, want.duplicates, next.Duplicates)
	}
	if want.maxMsgs != 0 {
		next.MaxMsgs = larger(cur.MaxMsgs, want.maxMsgs)
		note("max_msgs", cur.MaxMsgs, want.maxMsgs, next.MaxMsgs)
	}
	if want.direct != nil && !*want.direct && cur.AllowDirect {
		next.AllowDirect = false
		changes = append(changes, "allow_direct true -> false")
	}
	d.setDrift(cur.Name, drift)
	if len(changes) == 0 {
		return st, nil
	}
	d.log.Warn("updating shared stream", "stream", cur.Name, "changes", changes)
	return d.js.UpdateStream(ctx, next)
}

// setDrift records (or clears) asset's drift.
func (d *Declarer) setDrift(asset string, drift []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(drift) == 0 {
		delete(d.drifts, asset)
		d.drift.WithLabelValues(asset).Set(0)
		return
	}
	msg := fmt.Sprint(drift)
	if d.drifts[asset] != msg {
		d.log.Warn("this relay's configuration disagrees with the shared stream; keeping the cluster's larger setting",
			"stream", asset, "drift", drift)
	}
	d.drifts[asset] = msg
	d.drift.WithLabelValues(asset).Set(1)
}

// longer returns the longer of two max ages, 0 (unlimited) being longest.
func longer(a, b time.Duration) time.Duration {
	if a == 0 || b == 0 {
		return 0
	}
	return max(a, b)
}

// larger returns the larger of two limits, <= 0 (unlimited) being largest.
func larger(a, b int64) int64 {
	if a <= 0 || b <= 0 {
		return -1
	}
	return max(a, b)
}
