package tracker

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// Convergence benchmark: N members on the in-memory network with the
// production gossip and failure-detection defaults, each holding D digests
// drawn from a pool shared by the cluster (nodes run the same images).
//
//	go test -run '^$' -bench TrackerConvergence -benchtime 1x -timeout 30m ./tracker
//
// TRACKER_BENCH_DIGESTS overrides D for every N (default: 2,000, and 400
// at N=500: 500 in-process indexes of 500x2,000 entries would need ~10 GB).
func BenchmarkTrackerConvergence(b *testing.B) {
	for _, n := range []int{50, 200, 500} {
		d := 2000
		if n == 500 {
			d = 400
		}
		if v, err := strconv.Atoi(os.Getenv("TRACKER_BENCH_DIGESTS")); err == nil && v > 0 {
			d = v
		}
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			for range b.N {
				runConvergence(b, n, d)
			}
		})
	}
}

const (
	benchPool          = 20_000 // distinct digests the members draw from
	benchAnnouncements = 20
	benchRestWindow    = 30 * time.Second
	benchChurnWindow   = 30 * time.Second
	benchChurnEvery    = 3 * time.Second
	benchSpreadBound   = 30 * time.Second // bound on one announcement's wait
)

func benchConfig(i int, cfg *Config) {
	prod := DefaultConfig()
	cfg.GossipInterval, cfg.GossipNodes, cfg.RetransmitMult = prod.GossipInterval, prod.GossipNodes, prod.RetransmitMult
	cfg.ProbeInterval, cfg.ProbeTimeout, cfg.SuspicionMult = prod.ProbeInterval, prod.ProbeTimeout, prod.SuspicionMult
	cfg.PushPullInterval = prod.PushPullInterval
	cfg.JoinAttempts = 5
}

// poolDigest is digest k of the shared pool.
func poolDigest(k int) sha256Digest {
	return sha256.Sum256(binary.BigEndian.AppendUint64([]byte("pool"), uint64(k)))
}

// holdings picks d distinct pool digests for one member.
func holdings(rng *rand.Rand, d int) []sha256Digest {
	picked := make(map[int]bool, d)
	out := make([]sha256Digest, 0, d)
	for len(out) < d {
		k := rng.IntN(benchPool)
		if !picked[k] {
			picked[k] = true
			out = append(out, poolDigest(k))
		}
	}
	return out
}

// preload gives tr an inventory of ds without broadcasting it (the
// cluster is formed already: this stands for inventories it had on
// joining) and returns its snapshot.
func preload(tr *Tracker, ds []sha256Digest) view {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, d := range ds {
		if _, err := tr.own.change(d, stateComplete); err != nil {
			panic(err)
		}
	}
	tr.own.pending = tr.own.pending[:0]
	return tr.own.snapshot()
}

func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// progress prints a phase of a long benchmark as it happens (with -v).
func progress(format string, args ...any) {
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
	}
}

func runConvergence(b *testing.B, n, d int) {
	b.StopTimer()
	progress("N=%d D=%d: forming the cluster", n, d)
	rng := rand.New(rand.NewPCG(uint64(n), uint64(d)))
	start := time.Now()
	c := benchCluster(b, n)
	defer c.close()
	waitFor(b, "full membership", 5*time.Minute, func() bool {
		for _, tr := range c.nodes {
			if tr.ml.NumMembers() != n {
				return false
			}
		}
		return true
	})
	formed := time.Since(start)
	progress("formed in %s; loading inventories", formed)

	// Every member holds d digests, and every member's index knows them all.
	heap0 := heapInuse()
	views := make([]view, n)
	for i, tr := range c.nodes {
		views[i] = preload(tr, holdings(rng, d))
	}
	for _, tr := range c.nodes {
		tr.merge(&message{Kind: kindState, Views: views})
	}
	views = nil
	indexBytes := float64(heapInuse()-heap0) / float64(n)
	b.Logf("N=%d D=%d: cluster formed in %s; %d index entries per member", n, d, formed.Round(time.Second), c.nodes[0].Stats().Announcements)

	progress("loaded; measuring at rest")
	// At rest: membership probes and anti-entropy only. memberlist's first
	// periodic push/pull comes 1-2 intervals (2-10 minutes here) after
	// start, too late for a short window; so the window measures probes
	// and gossip, and push/pull is added from the measured size of the
	// state exchanged and memberlist's schedule.
	sent0 := c.sentBytes()
	time.Sleep(benchRestWindow)
	probes := float64(c.sentBytes()-sent0) / float64(n) / benchRestWindow.Seconds()
	pushPull := c.pushPullRate()
	rest := probes + pushPull

	progress("measuring spread")
	// A new announcement by a random member, until every other has it.
	var spreads []time.Duration
	missed := 0
	for k := range benchAnnouncements {
		origin := c.nodes[rng.IntN(n)]
		took, miss := spread(b, c, origin, testDigest(fmt.Sprintf("new-%d-%d", n, k)))
		spreads = append(spreads, took)
		missed += miss
	}
	slices.Sort(spreads)

	progress("measuring churn")
	// Churn: every benchChurnEvery one member crashes and a new one, with
	// its own d digests, joins.
	sent0 = c.sentBytes()
	churnStart := time.Now()
	joined, joinFailures := 0, 0
	for time.Since(churnStart) < benchChurnWindow {
		victim := c.nodes[1+rng.IntN(len(c.nodes)-1)] // node-000 is the join point
		crash(victim)
		c.nodes = slices.DeleteFunc(c.nodes, func(tr *Tracker) bool { return tr == victim })
		fresh, port, err := benchNode(c, fmt.Sprintf("churn-%03d", joined+joinFailures))
		if err != nil {
			b.Fatal(err)
		}
		preload(fresh, holdings(rng, d))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = fresh.Join(ctx, []string{c.ports[c.nodes[0]].String()})
		cancel()
		if err != nil {
			// Counted, not fatal: on a loaded machine the full-view push/pull
			// of a join can exceed memberlist's 10 s stream timeout.
			b.Logf("churn: %s could not join: %v", fresh.LocalName(), err)
			joinFailures++
			crash(fresh)
		} else {
			c.nodes = append(c.nodes, fresh)
			c.ports[fresh] = port
			joined++
		}
		time.Sleep(time.Until(churnStart.Add(time.Duration(joined+joinFailures) * benchChurnEvery)))
	}
	churn := float64(c.sentBytes()-sent0)/float64(n)/time.Since(churnStart).Seconds() + pushPull

	b.ReportMetric(percentile(spreads, 0.50).Seconds(), "p50-s")
	b.ReportMetric(percentile(spreads, 0.99).Seconds(), "p99-s")
	b.ReportMetric(float64(missed), "members-missed")
	b.ReportMetric(rest/1024, "rest-KB/s/member")
	b.ReportMetric(churn/1024, "churn-KB/s/member")
	b.ReportMetric(indexBytes/(1<<20), "index-MB/member")
	b.ReportMetric(pushPull/1024, "pushpull-KB/s/member")
	b.ReportMetric(float64(joinFailures), "churn-join-failures")
	b.ReportMetric(float64(d), "digests/member")
	b.Logf("N=%d: spread p50 %s p99 %s (%d announcements, %d member-misses); rest %.2f KB/s, churn %.2f KB/s per member (%d replaced in %s); index %.1f MB per member",
		n, percentile(spreads, 0.5), percentile(spreads, 0.99), len(spreads), missed, rest/1024, churn/1024, joined, benchChurnWindow, indexBytes/(1<<20))
}

// benchCluster starts n members and joins them through node-000, eight at
// a time: one by one, forming 500 members takes minutes on a small machine.
func benchCluster(b *testing.B, n int) *cluster {
	c := &cluster{tb: b, net: newMemNet(), ports: make(map[*Tracker]*memTransport)}
	first, port, err := benchNode(c, "node-000")
	if err != nil {
		b.Fatal(err)
	}
	c.nodes, c.ports[first] = append(c.nodes, first), port
	nodes := make([]*Tracker, n)
	ports := make([]*memTransport, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := 1; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			tr, port, err := benchNode(c, fmt.Sprintf("node-%03d", i))
			if err != nil {
				errs[i] = err
				return
			}
			nodes[i], ports[i] = tr, port
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			errs[i] = tr.Join(ctx, []string{c.ports[first].String()})
		}()
	}
	wg.Wait()
	for i := 1; i < n; i++ {
		if nodes[i] != nil {
			c.nodes, c.ports[nodes[i]] = append(c.nodes, nodes[i]), ports[i]
		}
	}
	for _, err := range errs {
		if err != nil {
			c.close()
			b.Fatal(err)
		}
	}
	return c
}

// benchNode starts a member with the bench configuration on a new address
// of c's network, not yet joined.
func benchNode(c *cluster, name string) (*Tracker, *memTransport, error) {
	port := c.net.transport()
	cfg := testConfig(name, port)
	benchConfig(0, &cfg)
	tr, err := New(cfg)
	return tr, port, err
}

// spread announces d at from and waits until every other live member
// lists from as its seeder; it returns the time the last one took and how
// many members never saw it within benchSpreadBound. It polls each
// member's Lookup, the answer a pull gets, about every millisecond: the
// resolution is a sweep, milliseconds against spreads of hundreds.
func spread(b *testing.B, c *cluster, from *Tracker, d digest.Digest) (time.Duration, int) {
	pending := make([]*Tracker, 0, len(c.nodes))
	for _, tr := range c.nodes {
		if tr != from {
			pending = append(pending, tr)
		}
	}
	t0 := time.Now()
	if err := from.Announce(d, true); err != nil {
		b.Fatal(err)
	}
	var last time.Duration
	for deadline := t0.Add(benchSpreadBound); len(pending) > 0 && time.Now().Before(deadline); {
		before := len(pending)
		pending = slices.DeleteFunc(pending, func(tr *Tracker) bool { return listsSeeder(tr, d, from.LocalName()) })
		if len(pending) < before {
			last = time.Since(t0)
		}
		time.Sleep(time.Millisecond)
	}
	if len(pending) > 0 {
		return benchSpreadBound, len(pending)
	}
	return last, 0
}

// listsSeeder reports whether tr's lookup of d names node.
func listsSeeder(tr *Tracker, d digest.Digest, node string) bool {
	return slices.ContainsFunc(tr.Lookup(d), func(s Seeder) bool { return s.Node == node })
}

// memberlistNodeStateBytes estimates one member's entry in memberlist's own
// push/pull state (msgpack: name, address, port, ~60 bytes of metadata,
// incarnation, state, versions, with field names).
const memberlistNodeStateBytes = 150

// pushPullRate is the periodic anti-entropy traffic per member per second:
// each member starts one exchange per memberlist push/pull period (scaled
// up beyond 32 members), and both sides send their state.
func (c *cluster) pushPullRate() float64 {
	sample := c.nodes[:min(len(c.nodes), 20)]
	var state float64
	for _, tr := range sample {
		state += float64(len((&delegate{tr}).LocalState(false)))
	}
	n := len(c.nodes)
	state = state/float64(len(sample)) + float64(n*memberlistNodeStateBytes)
	period := c.nodes[0].cfg.PushPullInterval
	if n > 32 {
		period *= time.Duration(math.Ceil(math.Log2(float64(n))-5) + 1)
	}
	return 2 * state / period.Seconds()
}

func (c *cluster) sentBytes() int64 {
	c.net.mu.RLock()
	defer c.net.mu.RUnlock()
	var sum int64
	for _, t := range c.net.byAddr {
		sum += t.sent.Load()
	}
	return sum
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1)*p + 0.5)
	return sorted[i]
}

// BenchmarkIndexMemory: heap of an index holding 1,000,000 (member,
// digest) entries: 500 members x 2,000 digests, drawn from a shared pool
// (a cluster running the same images) or all distinct (worst case).
//
//	go test -run '^$' -bench IndexMemory -benchtime 1x ./tracker
func BenchmarkIndexMemory(b *testing.B) {
	const members, perMember = 500, 2000
	for _, shared := range []bool{true, false} {
		name := "distinct"
		if shared {
			name = "shared-pool"
		}
		b.Run(name, func(b *testing.B) {
			for range b.N {
				rng := rand.New(rand.NewPCG(1, 2))
				views := make([]view, members)
				for m := range views {
					v := view{Name: fmt.Sprintf("node-%03d", m), Epoch: 1, Base: perMember}
					var ds []sha256Digest
					if shared {
						ds = holdings(rng, perMember)
					} else {
						for k := range perMember {
							ds = append(ds, sha256.Sum256(binary.BigEndian.AppendUint64(nil, uint64(m*perMember+k))))
						}
					}
					for _, d := range ds {
						v.Entries = append(v.Entries, entry{Digest: d, State: stateComplete})
					}
					sortEntries(v.Entries)
					views[m] = v
				}
				before := heapInuse()
				x := newIndex(16384, 1_000_000)
				for m := range views {
					x.apply(&views[m])
				}
				used := heapInuse() - before
				entries := 0
				for _, o := range x.origins {
					entries += o.refs
				}
				if entries != members*perMember {
					b.Fatalf("index holds %d entries, want %d", entries, members*perMember)
				}
				b.ReportMetric(float64(used)/(1<<20), "MB")
				b.ReportMetric(float64(used)/float64(entries), "B/entry")
				b.ReportMetric(float64(len(x.ids)), "digests")
				runtime.KeepAlive(x)
				runtime.KeepAlive(views)
			}
		})
	}
}
