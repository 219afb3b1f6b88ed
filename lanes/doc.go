// Package lanes parks requests that no provider can take yet on priority
// lanes, and hands capacity to them, highest lane first, the moment it
// frees.
//
// # Design
//
// A Set holds the parked requests in memory: per lane (highest priority
// first), per route (the capacity they compete for), per key (fairness) FIFO
// queues. A parked request is a Waiter with a Ticket (Set.Park): its handler
// goroutine blocks in Ticket.Wait on the ticket's channel and its context,
// and nothing else runs or ticks on its behalf: no goroutine and no timer of
// its own. Its outcome is decided once, under the Set's lock, by whoever
// takes it out of its queue: the dispatcher (a grant, or the end of its
// wait), the waiter when its context ends, or Close. One dispatcher
// goroutine per Set runs a pass whenever capacity may have freed (Kick,
// called when an upstream call ends or the configuration changes), when the
// earliest time a refusing provider named has come, or when the earliest
// wait ends (a min-heap of deadlines). A pass first expires the requests
// whose wait is over, then walks the lanes in priority order, except that a
// backlogged lane holding less than its min_share of recent dispatches goes
// first; within a lane it serves routes in turn and, within a route, keys
// round-robin, FIFO per key. For each candidate it calls the waiter's Admit;
// the grant is handed to the waiting goroutine by closing its ticket's
// channel, so the slot a finished call released is taken by the next parked
// request within microseconds, without polling. When a route's candidate is
// refused, the route is skipped for the rest of the pass.
//
// Admit is the router's own admission (breaker, concurrency slot, token
// buckets) for the waiter's request, so the dispatcher holds the capacity
// before the waiter wakes: a woken waiter never finds it gone.
//
// # Early answers
//
// A FailFast waiter (a synchronous request) is not parked only to expire:
// Park refuses it with an *EarlyError when its route is held past its
// deadline (Waiter.Hold: every breaker open, every provider cooling
// down) or when the lane's trusted estimate of its wait is longer than
// its own (the route's requests ahead of it over the route's recent
// drain rate from the lane; estimate.go says when it is trusted). Once
// parked, the dispatcher ends its wait the same way when a hold begins
// that outlasts it.
//
// # JetStream
//
// Every parked request is mirrored to the JetStream stream RELAY_LANES
// (subjects relay.lanes.<lane>, memory storage: a synchronous request's
// caller is on its connection, and after a crash nobody waits for it) and
// removed from it when it leaves its lane, so `nats stream info
// RELAY_LANES` shows what is parked. The mirror is written off the request
// path by eight writer goroutines (a request's records always by the same
// one, so its park is written before its unpark), from queues that grow
// with a burst up to twice the lanes' total depth: 10,000 requests parked
// at once are all in the stream within a second. A record past that bound
// is dropped and counted (relay_lane_mirror_dropped_total), never the
// request; the in-memory queues are the authority. Asynchronous jobs are durable in their own file-storage stream and wait
// on these same lanes when they run, so priorities and limits apply to
// both.
package lanes
