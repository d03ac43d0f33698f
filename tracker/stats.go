package tracker

// Stats are the tracker's counters and sizes, for metrics and
// `dregistry swarm stats`.
type Stats struct {
	Members          int    // live members, this node included
	Origins          int    // members the index holds announcements of
	Digests          int    // distinct digests announced by anyone
	Announcements    int    // (member, digest) entries, tombstones included
	OwnDigests       int    // what this node announces
	QueuedBroadcasts int    // announcements waiting to be gossiped
	Received         uint64 // tracker messages received
	Dropped          uint64 // malformed or oversized messages dropped
	Stale            uint64 // views ignored as older than what is known
	Rebroadcast      uint64 // received announcements passed on
	SnapshotsSent    uint64 // inventories sent straight to new members
	SnapshotsFailed  uint64

	// Monotonic counts of announcements (complete or partial) and
	// withdrawals: made by this node (one per change of its inventory),
	// and received from other members and applied to the index (news
	// only: a change already known, or a snapshot entry that says what
	// the index already holds, is not counted). Losing a departed member's
	// announcements is not a withdrawal.
	AnnouncementsSent     uint64
	WithdrawalsSent       uint64
	AnnouncementsReceived uint64
	WithdrawalsReceived   uint64
}

// Stats returns a consistent copy of the counters.
func (t *Tracker) Stats() Stats {
	t.mu.RLock()
	s := Stats{
		Origins:    len(t.idx.byName),
		Digests:    len(t.idx.ids),
		OwnDigests: len(t.own.have),

		AnnouncementsSent:     t.own.announced,
		WithdrawalsSent:       t.own.withdrawn,
		AnnouncementsReceived: t.idx.announcementsApplied,
		WithdrawalsReceived:   t.idx.withdrawalsApplied,
	}
	for _, o := range t.idx.origins {
		if o != nil {
			s.Announcements += o.refs
		}
	}
	t.mu.RUnlock()
	s.Members = t.NumMembers()
	s.QueuedBroadcasts = t.queue.NumQueued()
	s.Received = t.stats.received.Load()
	s.Dropped = t.stats.dropped.Load()
	s.Stale = t.stats.stale.Load()
	s.Rebroadcast = t.stats.rebroadcast.Load()
	s.SnapshotsSent = t.stats.snapshotsSent.Load()
	s.SnapshotsFailed = t.stats.snapshotsFailed.Load()
	return s
}
