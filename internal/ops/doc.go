// Package ops serves a node's operations view: the versioned admin stats
// JSON (GET /admin/v1/stats, members and loopback only) and Prometheus
// metrics on a registry of its own. It reads the tracker and the swarm
// through small interfaces and never changes their state.
package ops
