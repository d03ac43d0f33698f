// Package ops serves a node's operations view: the status page, the
// versioned admin stats JSON (GET /admin/v1/stats) and its traffic history
// (GET /admin/v1/traffic), all for this host and members only, and
// Prometheus metrics on a registry of its own. It reads the tracker and the
// swarm through small interfaces and never changes their state.
//
// Locks: metrics.mu (the served-bytes totals) is a leaf, held for a map
// update only. The Observer is the registry's callback: it takes that lock
// and Prometheus' own, never blocks. Snapshot and the collector call the
// tracker's and the swarm's Stats with no lock of ops held, so those may
// take their own locks in any order they define. trafficRing.mu is a leaf
// too: Run (the one sampler) reads the counters first, then takes it to add
// a sample; handlers take it to copy the samples.
package ops
