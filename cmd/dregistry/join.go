package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/dregistry/dregistry/tracker"
)

// rejoinInterval is how long the daemon waits before trying --join again
// once the tracker's own retries are spent.
const rejoinInterval = 30 * time.Second

// aloneCheck is how often a joined node checks it still has company.
// memberlist stops gossiping to a failed member 30 s after it failed: a
// node cut off longer than that is never contacted again, and after the
// network returns it must join again itself.
const aloneCheck = 10 * time.Second

// joiner is the part of the tracker joinCluster drives.
type joiner interface {
	Join(ctx context.Context, addrs []string) error
	Members() []tracker.Member
}

// joinCluster meets the cluster through --join, trying again until it
// succeeds or ctx ends (a node that starts before its peers must still end
// up in the cluster, and pulls work meanwhile), then joins again whenever
// the node finds itself alone, until ctx ends.
func joinCluster(ctx context.Context, t joiner, addrs []string, log *slog.Logger) {
	joinClusterEvery(ctx, t, addrs, log, rejoinInterval, aloneCheck)
}

func joinClusterEvery(ctx context.Context, t joiner, addrs []string, log *slog.Logger, retry, check time.Duration) {
	if len(addrs) == 0 {
		return
	}
	for ctx.Err() == nil {
		if err := t.Join(ctx, addrs); err != nil {
			log.Error("not joined to the cluster yet; serving from containerd and the upstream meanwhile", "err", err)
			sleep(ctx, retry)
			continue
		}
		for ctx.Err() == nil && len(t.Members()) > 1 {
			sleep(ctx, check)
		}
		if ctx.Err() == nil {
			log.Warn("no other member left (network cut?); joining the cluster again", "join", addrs)
		}
	}
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
