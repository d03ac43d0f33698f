package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/dregistry/dregistry/containerd"
	"github.com/dregistry/dregistry/tracker"
)

// readyTimeout bounds the containerd probe of one /readyz request.
const readyTimeout = 2 * time.Second

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
