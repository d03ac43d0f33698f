package tracker

import (
	"bytes"
	"fmt"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// TestMembershipChurnDuringResyncNeverWedges: members fail and join while
// this node resyncs and announces in a loop, as the daemon's seeding loop
// does. memberlist calls the event delegate under its node lock and the
// delegate takes t.mu, so a tracker that calls memberlist while holding
// t.mu (Resync/change asking NumMembers did) deadlocks here: both locks
// are then held forever, gossip stops and the node looks dead.
//
// Every wait is bounded; a wedged tracker fails the test with a dump of
// the goroutines instead of hanging the suite.
func TestMembershipChurnDuringResyncNeverWedges(t *testing.T) {
	if testing.Short() {
		t.Skip("membership churn: skipped with -short")
	}
	const (
		churnRounds = 12               // members killed and replaced
		churnFor    = 15 * time.Second // upper bound on the churn phase
		wedgedAfter = 10 * time.Second // a call that takes this long is a deadlock
	)
	c := newCluster(t, 4, nil)
	subject := c.nodes[0]

	// Two large inventories the resync alternates between, so t.mu is held
	// for a while on every call and each call has changes to make.
	sets := [2][]digest.Digest{}
	for i := range 2000 {
		sets[i%2] = append(sets[i%2], testDigest(fmt.Sprintf("churn-%d", i)))
	}

	var calls atomic.Int64
	stop := make(chan struct{})
	var workers sync.WaitGroup
	for w := range 2 {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if w == 0 {
					if err := subject.Resync(sets[i%2]); err != nil {
						t.Errorf("resync: %v", err)
						return
					}
				} else {
					d := testDigest(fmt.Sprintf("partial-%d", i%50))
					if err := subject.Announce(d, false); err != nil {
						t.Errorf("announce: %v", err)
						return
					}
					if err := subject.Withdraw(d); err != nil {
						t.Errorf("withdraw: %v", err)
						return
					}
				}
				calls.Add(1)
			}
		}()
	}

	// Churn: crash a member (the others detect the failure: NotifyLeave
	// under memberlist's node lock) and start a new one (NotifyJoin).
	deadline := time.Now().Add(churnFor)
	for round := 0; round < churnRounds && time.Now().Before(deadline); round++ {
		victims := c.without(subject)
		crash(victims[round%len(victims)])
		before := calls.Load()
		waitProgress(t, "the tracker's own calls during churn", wedgedAfter, func() bool { return calls.Load() > before })
		if _, err := c.start(fmt.Sprintf("churn-%03d", round), nil); err != nil {
			// A join can fail while the cluster is wedged; the progress
			// check below says so with the goroutines.
			t.Logf("round %d: join: %v", round, err)
		}
		before = calls.Load()
		waitProgress(t, "the tracker's own calls after a join", wedgedAfter, func() bool { return calls.Load() > before })
	}

	close(stop)
	finished := make(chan struct{})
	go func() { workers.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(wedgedAfter):
		t.Fatalf("Resync/Announce did not return within %s: the tracker is wedged\n%s", wedgedAfter, goroutines())
	}
	// memberlist itself still answers (its node lock is free).
	answered := make(chan int, 1)
	go func() { answered <- subject.ml.NumMembers() }()
	select {
	case <-answered:
	case <-time.After(wedgedAfter):
		t.Fatalf("memberlist's node lock is held for good\n%s", goroutines())
	}
	if calls.Load() == 0 {
		t.Fatal("no call completed")
	}
}

// waitProgress fails with a goroutine dump when cond does not hold within
// timeout: here a bound on a deadlock, not a timing claim.
func waitProgress(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("no progress of %s within %s: wedged\n%s", what, timeout, goroutines())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// goroutines is a dump of every goroutine's stack, cut to a readable size.
func goroutines() string {
	var b bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	const max = 64 << 10
	if b.Len() > max {
		return b.String()[:max] + "\n…(cut)"
	}
	return b.String()
}
