package tracker

import "time"

// heldTTL bounds how long a view of a lost member waits for memberlist to
// see that member alive again. Healing takes seconds (the other side
// refutes its death as soon as it hears of it); a view older than this
// is left to anti-entropy.
const heldTTL = 2 * time.Minute

// heldView is the newest view of a lost member that came while this node
// still counted that member failed.
type heldView struct {
	v  view
	at time.Time
}

// When a partition heals, each side learns that the other is alive at its
// own moment. A member on the other side greets us with its inventory as
// soon as it sees us (NotifyJoin), and the index refuses that greeting if
// we still count the member failed: its run departed. Our own greeting,
// sent once we see it alive, gets no answer, since it greeted us a moment
// ago (replyWindow). Without holding the refused view, we would lack its
// inventory until a periodic push/pull happened to carry it, minutes at
// the default interval.
//
// So a view refused because its origin departed is held, if memberlist
// reported that origin failed (not left) within ReconnectTimeout, and
// applied when memberlist sees it alive again. One view per member is
// held: the one with the highest snapshot base, and of those the one with
// the latest change (a greeting is a snapshot as of the member's latest
// change, so it wins over relayed views and over single announcements).
// Runs under t.mu.
func (t *Tracker) holdIfLost(v *view, now time.Time) bool {
	o := t.idx.origin(v.Name, false)
	if o == nil || !o.departed || v.Epoch != o.epoch {
		return false
	}
	if _, lost := t.lost[v.Name]; !lost {
		return false
	}
	if h, ok := t.held[v.Name]; ok && now.Sub(h.at) < heldTTL && newer(&h.v, v) {
		return true
	}
	t.held[v.Name] = heldView{v: *v, at: now}
	return true
}

// applyHeld applies the view held for o's member, now seen alive again.
// Runs under t.mu.
func (t *Tracker) applyHeld(o *origin, now time.Time) {
	h, ok := t.held[o.name]
	if !ok {
		return
	}
	delete(t.held, o.name)
	if now.Sub(h.at) >= heldTTL {
		return
	}
	if _, stale := t.idx.apply(&h.v); stale {
		t.stats.stale.Add(1)
	}
}

// dropOldHeld forgets views held longer than heldTTL. Runs under t.mu.
func (t *Tracker) dropOldHeld(now time.Time) {
	for name, h := range t.held {
		if now.Sub(h.at) >= heldTTL {
			delete(t.held, name)
		}
	}
}

// newer reports whether a says more than b: a higher snapshot base, or
// the same base and a later change.
func newer(a, b *view) bool {
	if a.Base != b.Base {
		return a.Base > b.Base
	}
	return latest(a) > latest(b)
}

// latest is the highest sequence number v speaks of.
func latest(v *view) uint32 {
	n := v.Base
	for i := range v.Entries {
		n = max(n, v.Entries[i].Seq)
	}
	return n
}
