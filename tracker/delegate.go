package tracker

import (
	"math/rand/v2"
	"slices"
	"time"

	"github.com/hashicorp/memberlist"
)

// Limits of what a peer may send us. A broadcast fits a gossip packet; a
// state stays under memberlist's own 20 MiB push/pull bound.
const (
	maxAnnounceBytes = 1400
	maxStateBytes    = 20 << 20
)

// delegate plugs the tracker into memberlist. memberlist calls it from its
// packet and stream loops, so every method only takes the lock briefly
// and never blocks on the network.
type delegate struct{ t *Tracker }

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*delegate)(nil)
)

// NodeMeta returns this node's metadata (fixed for the run).
func (d *delegate) NodeMeta(limit int) []byte {
	if len(d.t.meta) > limit {
		return nil // cannot happen: fields are bounded well below 512 bytes
	}
	return d.t.meta
}

// NotifyMsg receives announcements (gossip) and snapshots (direct).
func (d *delegate) NotifyMsg(b []byte) {
	t := d.t
	t.stats.received.Add(1)
	m, err := decode(b, maxStateBytes)
	if err == nil && m.Kind == kindAnnounce && len(b) > maxAnnounceBytes {
		err = malformed("announcement of %d bytes", len(b))
	}
	if err != nil {
		t.stats.dropped.Add(1)
		t.log.Debug("dropped a tracker message", "err", err)
		return
	}
	t.merge(m)
	if m.Kind == kindState && len(m.Views) == 1 && m.Views[0].Name != t.cfg.Name {
		t.answerSnapshot(m.Views[0].Name)
	}
	// Pass every announcement on once, as serf does: epidemic spread needs
	// each member that receives a message to gossip it. Deciding by "was it
	// news to my index" would starve the epidemic wherever a direct
	// snapshot got there first.
	if m.Kind == kindAnnounce && t.seen.add(b, time.Now()) {
		t.stats.rebroadcast.Add(1)
		t.enqueue(slices.Clone(b))
	}
}

// merge applies every view of m about others and reports whether any was news.
func (t *Tracker) merge(m *message) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	changed := false
	now := time.Now()
	for i := range m.Views {
		v := &m.Views[i]
		if v.Name == t.cfg.Name {
			continue // we are the authority on ourselves
		}
		if t.holdIfLost(v, now) {
			t.stats.stale.Add(1)
			continue
		}
		c, stale := t.idx.apply(v)
		if stale {
			t.stats.stale.Add(1)
		}
		changed = changed || c
	}
	return changed
}

// GetBroadcasts turns pending own changes into messages, then hands
// memberlist what fits in this packet.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	t := d.t
	t.mu.Lock()
	msgs := t.own.takePending(t.cfg.MaxMessageBytes)
	t.mu.Unlock()
	now := time.Now()
	for _, m := range msgs {
		t.seen.add(m, now) // so our own message coming back is not passed on
		t.enqueue(m)
	}
	return t.queue.GetBroadcasts(overhead, limit)
}

func (t *Tracker) enqueue(msg []byte) {
	t.queue.QueueBroadcast(broadcast(msg))
	if t.queue.NumQueued() > t.cfg.MaxQueuedBroadcasts {
		t.queue.Prune(t.cfg.MaxQueuedBroadcasts)
	}
}

// broadcast is one announcement message; none replaces another, since a
// newer change of the same digest carries a higher sequence number anyway.
type broadcast []byte

func (b broadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b broadcast) Message() []byte                       { return b }
func (b broadcast) Finished()                             {}

// LocalState is our side of a push/pull: our own inventory, plus other
// members' as we know them — all of them (up to JoinStateBytes) when a
// node joins, so it knows every seeder after one exchange, else
// RelayViews random ones, so a missed announcement gets repaired.
func (d *delegate) LocalState(join bool) []byte {
	t := d.t
	t.mu.RLock()
	defer t.mu.RUnlock()
	own := t.own.snapshot()
	views := []view{own}
	budget := t.cfg.JoinStateBytes - encodedViewLen(&own)
	others := make([]*origin, 0, len(t.idx.byName))
	for _, o := range t.idx.origins {
		if o != nil && o.alive && o.refs > 0 && o.name != t.cfg.Name {
			others = append(others, o)
		}
	}
	rand.Shuffle(len(others), func(i, j int) { others[i], others[j] = others[j], others[i] })
	if !join {
		others = others[:min(len(others), t.cfg.RelayViews)]
	}
	for _, o := range others {
		v := t.idx.viewOf(o)
		if budget -= encodedViewLen(&v); budget < 0 {
			break
		}
		views = append(views, v)
	}
	b := appendHeader(nil, kindState, len(views))
	for i := range views {
		b = appendView(b, &views[i])
	}
	return b
}

// MergeRemoteState takes the other side of a push/pull.
func (d *delegate) MergeRemoteState(b []byte, join bool) {
	t := d.t
	t.stats.received.Add(1)
	m, err := decode(b, maxStateBytes)
	if err == nil && m.Kind != kindState {
		err = malformed("push/pull carried kind %d", m.Kind)
	}
	if err != nil {
		t.stats.dropped.Add(1)
		t.log.Warn("dropped a push/pull state", "err", err)
		return
	}
	t.merge(m)
}

// NotifyJoin: a member appeared (or came back). Its metadata epoch tells
// whether our record of it is from this run; we send it our inventory.
func (d *delegate) NotifyJoin(n *memberlist.Node) {
	d.t.memberUp(n)
	if n.Name == d.t.cfg.Name {
		return
	}
	select {
	case d.t.sendQ <- snapshotTo{node: gossipNode(n)}:
	default:
		d.t.stats.snapshotsFailed.Add(1) // queue full; anti-entropy repairs
	}
}

// NotifyUpdate: a member's metadata changed.
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.t.memberUp(n) }

// NotifyLeave: a member left or failed; all its announcements go.
func (d *delegate) NotifyLeave(n *memberlist.Node) {
	t := d.t
	t.mu.Lock()
	defer t.mu.Unlock()
	t.addrs.remove(n.Name)
	delete(t.gossipAt, n.Name)
	t.live.Store(int64(len(t.gossipAt)))
	t.noteLost(n, time.Now())
	if o := t.idx.origin(n.Name, false); o != nil {
		t.idx.depart(o)
	}
}

func (t *Tracker) memberUp(n *memberlist.Node) {
	meta, err := decodeMeta(n.Meta)
	if err != nil {
		t.stats.dropped.Add(1)
		t.log.Warn("member has unreadable metadata; it will not be used as a seeder", "member", n.Name, "err", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.addrs.set(n.Name, addrsOf(n, meta, err == nil))
	t.gossipAt[n.Name] = gossipNode(n)
	t.live.Store(int64(len(t.gossipAt)))
	delete(t.lost, n.Name)
	if n.Name == t.cfg.Name {
		return
	}
	o := t.idx.origin(n.Name, true)
	if o == nil {
		t.stats.skipped.Add(1)
		return
	}
	if err == nil {
		if !t.idx.newEpoch(o, meta.Epoch) {
			// The record is of a newer run than this metadata: keep it.
			t.stats.stale.Add(1)
		}
		o.meta, o.metaOK = meta, true
	}
	o.alive, o.departed = true, false
	t.applyHeld(o, time.Now())
}

// gossipNode copies what SendReliable needs of n. memberlist calls its
// event delegate under its node lock, the only time reading n is safe.
func gossipNode(n *memberlist.Node) memberlist.Node {
	return memberlist.Node{Name: n.Name, Addr: slices.Clone(n.Addr), Port: n.Port}
}

// answerSnapshot sends our inventory back to a member that sent us its
// own: it greets members it sees join or come back, and then it may lack
// ours (it dropped them when it thought we failed).
func (t *Tracker) answerSnapshot(name string) {
	t.mu.RLock()
	n, ok := t.gossipAt[name]
	t.mu.RUnlock()
	if !ok {
		return // not a live member for us (yet): its NotifyJoin greets it
	}
	select {
	case t.sendQ <- snapshotTo{node: n, reply: true}:
	default:
		t.stats.snapshotsFailed.Add(1)
	}
}
