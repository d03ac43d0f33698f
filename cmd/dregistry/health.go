package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/dregistry/dregistry/containerd"
	"github.com/dregistry/dregistry/tracker"
)

// readyTimeout bounds the containerd probe of one /readyz request.
const readyTimeout = 2 * time.Second

// seedingStuckAfter: the seeding loop beats at least every second and after
// each blob it seeds (hashing one multi-GiB blob on a slow disk takes tens
// of seconds), so two minutes without a beat is a loop that is blocked.
const seedingStuckAfter = 2 * time.Minute

// staller is a component that can tell it stopped making progress: the
// tracker (its gossip delegate's locks) and the seeding loop. Stuck never
// blocks, so the health endpoints answer on a wedged node.
type staller interface{ Stuck() error }

// healthz answers 200 while the process serves HTTP and no component is
// wedged; a wedged one (a lock held for good) only heals by a restart, so
// the liveness probe must fail then.
func healthz(parts ...staller) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := firstStuck(parts); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "stuck: %v\n", err)
			return
		}
		_, _ = fmt.Fprintln(w, "ok")
	})
}

// readyz answers 200 only when no component is wedged, containerd answers
// and, if the node was told to join a cluster, it has met at least one
// other member; 503 with the reason otherwise.
func readyz(store *containerd.Store, members *tracker.Tracker, mustJoin bool, parts ...staller) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := firstStuck(parts); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: stuck: %v\n", err)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := store.Ping(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: containerd does not answer: %v\n", err)
			return
		}
		if mustJoin && members.NumMembers() < 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintln(w, "not ready: not joined to the cluster yet (no other member known)")
			return
		}
		_, _ = fmt.Fprintln(w, "ready")
	})
}

func firstStuck(parts []staller) error {
	for _, p := range parts {
		if err := p.Stuck(); err != nil {
			return err
		}
	}
	return nil
}

// heartbeat is the progress of a loop: it beats, and Stuck reports it once
// no beat came for limit.
type heartbeat struct {
	what  string
	limit time.Duration
	last  atomic.Int64 // unix ns of the last beat
}

func newHeartbeat(what string, limit time.Duration) *heartbeat {
	h := &heartbeat{what: what, limit: limit}
	h.beat()
	return h
}

func (h *heartbeat) beat() { h.last.Store(time.Now().UnixNano()) }

func (h *heartbeat) Stuck() error {
	if since := time.Since(time.Unix(0, h.last.Load())); since > h.limit {
		return fmt.Errorf("%s has made no progress for %s", h.what, since.Round(time.Second))
	}
	return nil
}

// logStuck says once when h stops making progress, and once when it is back.
func logStuck(ctx context.Context, h *heartbeat, log *slog.Logger) {
	tick := time.NewTicker(max(h.limit/8, time.Millisecond))
	defer tick.Stop()
	stuck := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		err := h.Stuck()
		switch {
		case err != nil && !stuck:
			log.Error("node is stuck: it answers /readyz and /healthz with 503 until it is restarted or the loop moves again", "err", err)
		case err == nil && stuck:
			log.Info("progress again", "loop", h.what)
		}
		stuck = err != nil
	}
}
