package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/dregistry/dregistry/tracker"
)

// fakeCluster stands in for the tracker: Join fails while down, and a
// joined node's company is what the test says.
type fakeCluster struct {
	mu      sync.Mutex
	down    bool
	members int
	joins   int
	joined  chan struct{} // gets a value on every successful Join
}

func (f *fakeCluster) Join(context.Context, []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.joins++
	if f.down {
		return errors.New("no member answered")
	}
	f.members = 2
	f.joined <- struct{}{}
	return nil
}

func (f *fakeCluster) Members() []tracker.Member {
	f.mu.Lock()
	defer f.mu.Unlock()
	return make([]tracker.Member, f.members)
}

func (f *fakeCluster) set(down bool, members int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down, f.members = down, members
}

func TestJoinClusterJoinsAgainWhenLeftAlone(t *testing.T) {
	f := &fakeCluster{down: true, joined: make(chan struct{}, 10)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		joinClusterEvery(ctx, f, []string{"10.0.0.1:7946"}, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Millisecond, time.Millisecond)
		close(done)
	}()
	wait := func(what string) {
		t.Helper()
		select {
		case <-f.joined:
		case <-time.After(time.Minute):
			t.Fatalf("no join: %s", what)
		}
	}
	// A cluster that is not there yet is retried until it answers.
	f.set(false, 0)
	wait("after the cluster came up")
	// With company, nothing happens; left alone (a network cut outlasting
	// the gossip to failed members), the node joins again.
	f.set(false, 1)
	wait("after being left alone")
	cancel()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("joinCluster did not end with its context")
	}
}

func TestJoinClusterWithoutAddressesDoesNothing(t *testing.T) {
	f := &fakeCluster{joined: make(chan struct{}, 1)}
	joinClusterEvery(context.Background(), f, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Millisecond, time.Millisecond)
	if f.joins != 0 {
		t.Fatalf("%d joins without addresses", f.joins)
	}
}
