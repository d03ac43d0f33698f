package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"slices"
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
	listed  []tracker.Member
	calls   int           // of Members
	contact chan []string // gets the addresses of every Contact
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
	f.calls++
	if f.listed != nil {
		return slices.Clone(f.listed)
	}
	return make([]tracker.Member, f.members)
}

func (f *fakeCluster) Contact(addrs []string) int {
	select {
	case f.contact <- addrs:
	default:
	}
	return 0
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

// A node cut off from part of the cluster for longer than memberlist
// gossips to the dead must reach those members itself once the network is
// back, even when it is not alone and has no --join (the first node).
func TestJoinClusterReachesLostMembers(t *testing.T) {
	member := func(name, addr string) tracker.Member {
		return tracker.Member{Name: name, GossipAddr: netip.MustParseAddrPort(addr)}
	}
	self, b, c := member("a", "10.0.0.1:7946"), member("b", "10.0.0.2:7946"), member("c", "10.0.0.3:7946")
	f := &fakeCluster{listed: []tracker.Member{self, b, c}, contact: make(chan []string, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		joinClusterEvery(ctx, f, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Millisecond, time.Millisecond)
		close(done)
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Fatal("joinCluster did not end with its context")
		}
	}()
	// Once the node has seen b alive, b vanishes.
	for i := 0; ; i++ {
		f.mu.Lock()
		seen := f.calls > 0
		if seen {
			f.listed = []tracker.Member{self, c}
		}
		f.mu.Unlock()
		if seen {
			break
		}
		if i == 6000 {
			t.Fatal("the membership was never read")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case got := <-f.contact:
		if !slices.Equal(got, []string{"10.0.0.2:7946"}) {
			t.Fatalf("contacted %v, want the lost member b only", got)
		}
	case <-time.After(time.Minute):
		t.Fatal("the lost member was never contacted")
	}
	if f.joins != 0 {
		t.Fatalf("%d joins without --join addresses", f.joins)
	}
}

func TestLostMembersAreForgottenWhenBackOrAfterLostFor(t *testing.T) {
	b := tracker.Member{Name: "b", GossipAddr: netip.MustParseAddrPort("10.0.0.2:7946")}
	l := lostMembers{}
	now := time.Now()
	l.update([]tracker.Member{b}, now)
	if got := l.addrs(); len(got) != 0 {
		t.Fatalf("a live member is lost: %v", got)
	}
	l.update(nil, now)
	if got := l.addrs(); len(got) != 1 {
		t.Fatalf("lost = %v, want b", got)
	}
	l.update([]tracker.Member{b}, now.Add(time.Minute))
	if got := l.addrs(); len(got) != 0 {
		t.Fatalf("a member that came back is still lost: %v", got)
	}
	l.update(nil, now.Add(2*time.Minute))
	l.update(nil, now.Add(2*time.Minute+lostFor+time.Second))
	if got := l.addrs(); len(got) != 0 || len(l) != 0 {
		t.Fatalf("lost for longer than %s and still tried: %v", lostFor, got)
	}
}
