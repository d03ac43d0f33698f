package main

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/dregistry/dregistry/tracker"
)

// rejoinInterval is how long the daemon waits before trying --join again
// once the tracker's own retries are spent, and how often it reaches out to
// members it lost.
const rejoinInterval = 30 * time.Second

// aloneCheck is how often a joined node checks its company.
// memberlist stops gossiping to a failed member 30 s after it failed: a
// node cut off longer than that is never contacted again, and after the
// network returns it must join again itself.
const aloneCheck = 10 * time.Second

// lostFor is how long the daemon keeps reaching out to a member that
// vanished: long enough for a network partition to heal, short enough that
// a node removed for good stops costing a connection attempt.
const lostFor = 10 * time.Minute

// joiner is the part of the tracker joinCluster drives.
type joiner interface {
	Join(ctx context.Context, addrs []string) error
	Contact(addrs []string) int
	Members() []tracker.Member
}

// joinCluster meets the cluster through --join, trying again until it
// succeeds or ctx ends (a node that starts before its peers must still end
// up in the cluster, and pulls work meanwhile). Then, until ctx ends, it
// joins again whenever the node finds itself alone, and reaches out to
// members that vanished, so the two sides of a partition merge once the
// network is back (memberlist itself gives up on them after 30 s).
func joinCluster(ctx context.Context, t joiner, addrs []string, log *slog.Logger) {
	joinClusterEvery(ctx, t, addrs, log, rejoinInterval, aloneCheck)
}

func joinClusterEvery(ctx context.Context, t joiner, addrs []string, log *slog.Logger, retry, check time.Duration) {
	lost := lostMembers{}
	joined := len(addrs) == 0 // a node with no --join starts the cluster
	var lastContact time.Time
	for ctx.Err() == nil {
		if !joined {
			if err := t.Join(ctx, addrs); err != nil {
				log.Error("not joined to the cluster yet; serving from containerd and the upstream meanwhile", "err", err)
				sleep(ctx, retry)
				continue
			}
			joined = true
		}
		sleep(ctx, check)
		if ctx.Err() != nil {
			return
		}
		members := t.Members()
		now := time.Now()
		lost.update(members, now)
		if len(members) <= 1 && len(addrs) > 0 {
			log.Warn("no other member left (network cut?); joining the cluster again", "join", addrs)
			joined = false
		}
		if gone := lost.addrs(); len(gone) > 0 && now.Sub(lastContact) >= retry {
			lastContact = now
			if n := t.Contact(gone); n > 0 {
				log.Info("reached members lost earlier", "answered", n, "tried", len(gone))
			}
		}
	}
}

// lostMembers remembers, by name, the gossip address of members that were
// seen alive and are no longer listed, for lostFor.
type lostMembers map[string]lostMember

type lostMember struct {
	addr  string
	since time.Time
	live  bool
}

func (l lostMembers) update(members []tracker.Member, now time.Time) {
	listed := make(map[string]bool, len(members))
	for _, m := range members {
		listed[m.Name] = true
		if m.GossipAddr.IsValid() {
			l[m.Name] = lostMember{addr: m.GossipAddr.String(), live: true}
		}
	}
	for name, m := range l {
		switch {
		case listed[name]:
		case m.live:
			l[name] = lostMember{addr: m.addr, since: now}
		case now.Sub(m.since) > lostFor:
			delete(l, name)
		}
	}
}

// addrs lists the gossip addresses of the members lost now, sorted.
func (l lostMembers) addrs() []string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(l)) {
		if m := l[name]; !m.live {
			out = append(out, m.addr)
		}
	}
	return out
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
	case <-timer.C:
	}
}
