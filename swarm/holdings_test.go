package swarm

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// Changes signals every change of Holdings — a seed added, a growth that
// becomes a seed, a seed dropped — so the daemon announces on change.
func TestHoldingsChangesSignalEveryChange(t *testing.T) {
	tr := newTracker()
	n := startNode(t, tr, "127.0.0.2", "", nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	drain := func() {
		select {
		case <-n.Changes():
		default:
		}
	}
	signalled := func(what string) {
		t.Helper()
		select {
		case <-n.Changes():
		default:
			t.Fatalf("%s: Changes not signalled", what)
		}
	}
	drain()

	blob, d := randomBlob(t, 3<<20)
	if err := n.Seed(ctx, d, int64(len(blob)), bytes.NewReader(blob)); err != nil {
		t.Fatal(err)
	}
	signalled("seed")
	if h := n.Holdings(); len(h) != 1 || !h[d] {
		t.Fatalf("holdings after seed: %v, want %s complete", h, d)
	}

	grown, g := randomBlob(t, 3<<20)
	growth, err := n.Grow(g, int64(len(grown)), bytes.NewReader(grown))
	if err != nil {
		t.Fatal(err)
	}
	signalled("grow")
	if complete, ok := n.Holdings()[g]; !ok || complete {
		t.Fatalf("holdings of a growth: %v, want %s partial", n.Holdings(), g)
	}
	growth.Advance(int64(len(grown)))
	growth.Complete()
	deadline := time.Now().Add(30 * time.Second)
	for !n.Holdings()[g] {
		if time.Now().After(deadline) {
			t.Fatal("completed growth never became a seed")
		}
		select {
		case <-n.Changes():
		case <-time.After(time.Second):
		}
	}

	drain()
	n.Unseed(d)
	signalled("unseed")
	if _, ok := n.Holdings()[d]; ok {
		t.Fatalf("unseeded blob still held: %v", n.Holdings())
	}
}
