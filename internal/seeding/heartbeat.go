package seeding

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// heartbeat is the progress of a loop that waits for events: while busy it
// beats after each step, and Stuck reports it once it has been busy with
// no beat for limit. Idle (waiting on its channels) it is never stuck.
type heartbeat struct {
	what  string
	limit time.Duration
	// last is the unix ns of the last beat while busy; 0 while idle.
	last atomic.Int64
}

func newHeartbeat(what string, limit time.Duration) *heartbeat {
	return &heartbeat{what: what, limit: limit}
}

func (h *heartbeat) busy() { h.beat() }
func (h *heartbeat) beat() { h.last.Store(time.Now().UnixNano()) }
func (h *heartbeat) idle() { h.last.Store(0) }

func (h *heartbeat) Stuck() error {
	last := h.last.Load()
	if last == 0 {
		return nil
	}
	if since := time.Since(time.Unix(0, last)); since > h.limit {
		return fmt.Errorf("%s has made no progress for %s", h.what, since.Round(time.Second))
	}
	return nil
}

// logStuck says once when a loop stops making progress, and once when it
// is back. It polls the heartbeats (an atomic load each) because a stuck
// loop cannot say so itself.
func logStuck(ctx context.Context, log *slog.Logger, hs ...*heartbeat) {
	limit := hs[0].limit
	for _, h := range hs {
		limit = min(limit, h.limit)
	}
	tick := time.NewTicker(max(limit/8, time.Millisecond))
	defer tick.Stop()
	stuck := make([]bool, len(hs))
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for i, h := range hs {
			err := h.Stuck()
			switch {
			case err != nil && !stuck[i]:
				log.Error("node is stuck: it answers /readyz and /healthz with 503 until it is restarted or the loop moves again", "err", err)
			case err == nil && stuck[i]:
				log.Info("progress again", "loop", h.what)
			}
			stuck[i] = err != nil
		}
	}
}
