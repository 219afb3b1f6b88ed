// Package lease holds a resource's limits (a provider's rpm, input_tpm,
// output_tpm and max_concurrency now; a key's later) for a whole cluster
// of relays with capacity leases on JetStream KV, in the style of Google's
// Doorman: admission stays local to each relay, with no NATS round trip
// per request; only the shares move through NATS.
//
// # Protocol
//
// Every relay runs one [Manager]. A grant lasts one lease period; every
// sixth of it (a round) each relay
//
//   - writes its demand for each resource (key d.<resource>.<relay> of the
//     bucket [Bucket], with a per-key TTL of half a period): its recent
//     admission rates (smoothed counters of its [Holder]), its calls in
//     flight, its parked backlog per lane, the epoch of the last grants
//     record it applied, and what the upstream taught it;
//   - coordinates the resources whose coordinator key (c.<resource>) it
//     holds: the key is created with a TTL of a third of a period (at least
//     1 s) and renewed by compare-and-set every round, so one relay at a
//     time coordinates and a dead coordinator is replaced once its key
//     expires, early enough that its successor's grants reach the relays
//     before the last grants it wrote expire. The coordinator reads
//     the live demands and the stored grants record (g.<resource>),
//     computes the next one and writes it by compare-and-set on the
//     revision it read, so two coordinators can never both write;
//   - reads the grants record and applies its grant to its [Holder] (for a
//     provider, [ActorHolder]: actor.Actor.SetShare).
//
// Records are read from the stream leader (no direct gets), and the
// bucket's replicas follow nats.replicas through lanes/assets.
//
// # Division
//
// [Divide] splits each limited kind's capacity, limit × (1 − reserve)
// (concurrency: the whole limit, counted exactly), by water-filling: a
// floor for every live relay (so an idle one can start a burst before its
// next grant); each lane's min_share among the relays with backlog on it
// (so min_share holds for the cluster in aggregate); then, class by
// class, the asks of relays keeping up with their traffic (their recent
// use with room to grow: cutting them would only move the backlog), then
// backlog asks lane by lane in priority order (interactive backlog on
// one relay outranks batch backlog on another); within a class no relay
// gets more than it asks while another is short. What is left is split
// evenly. A backlog asks for its recent use plus what drains it within one
// lease period, so a relay with a deep lane gets the larger share at the
// next grant. Concurrency is split in whole calls. Bursts are split with
// the rates: the actor's requests bucket holds ceil(share/60), its token
// buckets a minute of their share.
//
// # The invariant
//
// The sum over relays of what each may still use under unexpired grants
// never exceeds the limit. A relay applies one record at a time and never
// an older one, so what it may use is its latest share plus earlier
// shares it has not acknowledged replacing. The coordinator keeps those
// earlier grants in each relay's entry until they expire or the relay
// acknowledges a later epoch, and [Raise] turns targets into grants: a
// decrease is granted at once (it takes effect when applied), an increase
// only from capacity that no relay holds, counting the calls a relay has
// in flight and the unexpired grants of relays that vanished. A relay
// trusts a grant until its expiry less a skew margin (a sixth of a
// period), measured both by the issuer's clock and by the time it read
// the record, whichever ends sooner. FuzzCoordinate checks the invariant
// through random demands, deaths and late acknowledgements.
//
// # Failures
//
// A relay that dies keeps its share counted until its grant expires; the
// cluster runs under the limit meanwhile. A coordinator that dies leaves
// grants that run to expiry; the next relay to create the coordinator key
// continues from the stored record (its epochs, its earlier grants). A
// relay that cannot reach NATS keeps its grant until it expires, then
// runs on a static safe share, limit × (1 − reserve) ÷ the last known
// number of relays (concurrency: at least one call), never the whole
// limit; [Manager.Check] fails and relay_lease_safe_share is 1 meanwhile.
// A minority partition cannot write (JetStream needs a majority), so its
// relays end on safe shares. Before its first grant a relay runs on the
// same safe share, sized by the cluster's expected size. A relay alone
// runs no Manager at all.
//
// # What the upstream teaches
//
// A retry-after cool-down and the caps learned from rate-limit headers
// travel in the demand records to the coordinator, which merges them (the
// latest cool-down; per bucket the cap learned last) into the grants
// record; every relay applies a cool-down it has not seen and each new cap
// scaled to its share of the limit, within about a lease period.
//
// The circuit breaker stays per relay on purpose: it judges the path from
// this relay to the upstream (its network, its DNS, its connection pool)
// as much as the upstream itself, and a breaker opened by one relay's
// broken path must not stop relays whose path works. An upstream that is
// down for everyone opens every relay's breaker within its own window.
package lease
