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

// healthz answers 200 while the process serves HTTP at all.
func healthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = fmt.Fprintln(w, "ok")
	})
}

// readyz answers 200 only when containerd answers and, if the node was
// told to join a cluster, it has met at least one other member; 503 with
// the reason otherwise.
func readyz(store *containerd.Store, members *tracker.Tracker, mustJoin bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := store.Ping(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: containerd does not answer: %v\n", err)
			return
		}
		if n := len(members.Members()); mustJoin && n < 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintln(w, "not ready: not joined to the cluster yet (no other member known)")
			return
		}
		_, _ = fmt.Fprintln(w, "ready")
	})
}
