// Package tracker owns the memberlist cluster: node metadata and roles,
// seeder announcements and lookups. It is the decentralized tracker: there
// is no central tracker process.
//
// # Locks
//
// Three locks matter, and they are never nested in the order that
// deadlocks:
//
//   - memberlist's node lock. memberlist holds it (for writing) while it
//     calls the event delegate: NotifyJoin, NotifyUpdate, NotifyLeave.
//     Members, NumMembers, the probe loop and incoming push/pull streams
//     take it too.
//   - Tracker.mu guards the index, the own inventory, the member
//     addresses, gossipAt, the lost members and the views held for them
//     (held.go). The event callbacks take it, so the order
//     is: memberlist's node lock, then Tracker.mu. Therefore nothing that
//     holds Tracker.mu ever calls into memberlist (Members, NumMembers,
//     SendReliable, Join, ...): code that needs the membership under
//     Tracker.mu reads gossipAt or the live count the callbacks recorded.
//   - the broadcast queue's own lock (memberlist.TransmitLimitedQueue),
//     taken after Tracker.mu is released (GetBroadcasts, enqueue). Its
//     NumNodes reads the live count, not memberlist.
//
// Callbacks never block: NotifyMsg, GetBroadcasts, LocalState and
// MergeRemoteState take Tracker.mu briefly and hand network work (direct
// snapshots) to the sender goroutine through a buffered channel with a
// non-blocking send. The sender calls memberlist with no lock held.
//
// A watchdog (wedge.go) takes Tracker.mu and then, separately, memberlist's
// node lock every StuckAfter/6; when either is not free for StuckAfter,
// Stuck reports it so the daemon's health endpoints answer 503.
package tracker
