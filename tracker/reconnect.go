package tracker

import (
	"math/rand/v2"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// lostMember is a member that failed (not one that left): it may be on the
// other side of a partition, alive, and still counting this node dead.
type lostMember struct {
	addr string // gossip host:port
	at   time.Time
}

// reconnectBatch bounds the members one reconnect round contacts.
const reconnectBatch = 4

// reconnect contacts members that failed within Config.ReconnectTimeout,
// a few at random every Config.ReconnectInterval, as serf does.
// memberlist gossips to a failed member only for 30 s and never dials it
// again, and a member that missed its own death notice (the network was
// down while it was gossiped) never refutes it, so without this two sides
// of a partition stay apart, or one side keeps the other dead, for good.
// A contact is a push/pull exchange: the other side sees itself declared
// dead, refutes with a higher incarnation, and both views merge.
func (t *Tracker) reconnect() {
	defer t.wg.Done()
	tick := time.NewTicker(t.cfg.ReconnectInterval)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		}
		addrs := t.lostToContact(time.Now())
		if len(addrs) == 0 {
			continue
		}
		// No lock held: Join takes memberlist's node lock and its event
		// callbacks take t.mu.
		n, err := t.ml.Join(addrs)
		t.log.Debug("contacted lost members", "tried", addrs, "answered", n, "err", err)
	}
}

// lostToContact forgets members lost longer ago than ReconnectTimeout and
// picks up to reconnectBatch of the others.
func (t *Tracker) lostToContact(now time.Time) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dropOldHeld(now)
	addrs := make([]string, 0, reconnectBatch)
	for name, l := range t.lost {
		if now.Sub(l.at) > t.cfg.ReconnectTimeout {
			delete(t.lost, name)
			delete(t.held, name)
			continue
		}
		addrs = append(addrs, l.addr)
	}
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	return addrs[:min(len(addrs), reconnectBatch)]
}

// noteLost runs under t.mu from NotifyLeave (memberlist's lock held, so it
// only records). A graceful leave is not lost: that member comes back by
// joining. The set is bounded like the index's origins.
func (t *Tracker) noteLost(n *memberlist.Node, now time.Time) {
	if n.State == memberlist.StateLeft || n.Name == t.cfg.Name || len(t.lost) >= t.cfg.MaxMembers {
		return
	}
	t.lost[n.Name] = lostMember{addr: net.JoinHostPort(net.IP(n.Addr).String(), strconv.Itoa(int(n.Port))), at: now}
}

// catchUp exchanges full state with one random member CatchUpAfter after
// the join and again four times as long after it (Config.CatchUpAfter):
// what gossip did not bring a node that had just joined arrives then, not
// at memberlist's first push/pull. A contact is a push/pull as a joining
// node's (memberlist.Join), so each side sends every inventory it knows.
func (t *Tracker) catchUp() {
	defer t.wg.Done()
	for _, d := range []time.Duration{t.cfg.CatchUpAfter, 3 * t.cfg.CatchUpAfter} {
		timer := time.NewTimer(d)
		select {
		case <-t.stop:
			timer.Stop()
			return
		case <-timer.C:
		}
		addr := t.randomMemberAddr()
		if addr == "" {
			continue
		}
		// No lock held: Join takes memberlist's node lock and its event
		// callbacks take t.mu.
		n, err := t.ml.Join([]string{addr})
		t.log.Debug("caught up with a member", "member", addr, "answered", n, "err", err)
	}
}

// randomMemberAddr is the gossip address of a random live member other
// than this node; "" when there is none.
func (t *Tracker) randomMemberAddr() string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var addrs []string
	for name, n := range t.gossipAt {
		if name != t.cfg.Name {
			addrs = append(addrs, net.JoinHostPort(net.IP(n.Addr).String(), strconv.Itoa(int(n.Port))))
		}
	}
	if len(addrs) == 0 {
		return ""
	}
	return addrs[rand.IntN(len(addrs))]
}
