package ops

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// The traffic history: one sample every trafficInterval, the last
// trafficSamples of them (5 minutes), which is what the status page charts.
const (
	trafficInterval = 2 * time.Second
	trafficSamples  = 150
)

// Traffic is the answer of GET /admin/v1/traffic (see docs/stats-schema.md).
type Traffic struct {
	Version         int             `json:"version"`
	Node            string          `json:"node"`
	IntervalSeconds float64         `json:"intervalSeconds"`
	Samples         []TrafficSample `json:"samples"` // oldest first
}

// TrafficSample is the byte rates over one interval that ended at Time.
type TrafficSample struct {
	Time    time.Time `json:"time"`
	Seconds float64   `json:"seconds"` // the interval's length
	// Served is bytes per second served to clients, by source; every
	// source that served anything since start is listed.
	Served map[string]float64 `json:"servedBytesPerSecond"`
	// Peers is the swarm's piece bytes per second with each peer (member
	// name, or IP when no member has it); only peers with traffic in the
	// interval are listed.
	Peers map[string]PeerRate `json:"peers"`
}

// PeerRate is the swarm traffic with one peer over an interval.
type PeerRate struct {
	Up   float64 `json:"upBytesPerSecond"`
	Down float64 `json:"downBytesPerSecond"`
}

// trafficCounters are the cumulative counts a sample is the difference of.
type trafficCounters struct {
	served map[string]int64
	peers  map[string]PeerStats // by name
}

// trafficRing holds the samples. Its one writer is the sampler (Run, or a
// test calling sample); handlers read copies. mu is a leaf, held for slice
// and map updates only: the counts are read before it is taken.
type trafficRing struct {
	mu      sync.Mutex
	samples []TrafficSample // ring of at most trafficSamples, oldest at start
	start   int
	last    trafficCounters
	lastAt  time.Time
}

// add records the rates between the previous counters and cur.
func (r *trafficRing) add(now time.Time, cur trafficCounters) {
	r.mu.Lock()
	defer r.mu.Unlock()
	prev, prevAt := r.last, r.lastAt
	r.last, r.lastAt = cur, now
	if prevAt.IsZero() || !now.After(prevAt) {
		return // the first counts are the baseline
	}
	secs := now.Sub(prevAt).Seconds()
	s := TrafficSample{Time: now.UTC(), Seconds: secs, Served: map[string]float64{}, Peers: map[string]PeerRate{}}
	for src, n := range cur.served {
		s.Served[src] = rate(n, prev.served[src], secs)
	}
	for name, p := range cur.peers {
		was := prev.peers[name]
		if pr := (PeerRate{Up: rate(p.Uploaded, was.Uploaded, secs), Down: rate(p.Downloaded, was.Downloaded, secs)}); pr != (PeerRate{}) {
			s.Peers[name] = pr
		}
	}
	if len(r.samples) < trafficSamples {
		r.samples = append(r.samples, s)
		return
	}
	r.samples[r.start] = s
	r.start = (r.start + 1) % len(r.samples)
}

// rate is bytes per second from cur-prev; a counter that went back (an
// address taken over by another member name) counts as no traffic.
func rate(cur, prev int64, secs float64) float64 {
	if cur <= prev {
		return 0
	}
	return float64(cur-prev) / secs
}

// list returns the samples oldest first.
func (r *trafficRing) list() []TrafficSample {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]TrafficSample, 0, len(r.samples))
	out = append(out, r.samples[r.start:]...)
	return append(out, r.samples[:r.start]...)
}

// latest returns the newest sample, nil before there is one.
func (r *trafficRing) latest() *TrafficSample {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.samples) == 0 {
		return nil
	}
	s := r.samples[(r.start+len(r.samples)-1)%len(r.samples)]
	return &s
}

// Run samples the traffic every 2 s until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	s.sampleTraffic(time.Now())
	t := time.NewTicker(trafficInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			s.sampleTraffic(now)
		}
	}
}

// sampleTraffic reads the counters (no ops lock held) and adds a sample.
func (s *Server) sampleTraffic(now time.Time) {
	names := s.memberNames()
	s.traffic.add(now, trafficCounters{served: s.metrics.streamedBySource(), peers: peersByName(s.cfg.Torrents.Stats().Peers, names)})
}

func (s *Server) serveTraffic(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(Traffic{Version: SchemaVersion, Node: s.cfg.Node, IntervalSeconds: trafficInterval.Seconds(), Samples: s.traffic.list()})
}
