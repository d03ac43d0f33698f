package ops

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics holds the request-path metrics the Observer and the upstream
// meter set.
type metrics struct {
	requests *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	ttfb     *prometheus.HistogramVec
	duration *prometheus.HistogramVec
	upstream prometheus.Counter

	mu            sync.Mutex
	served        map[string]int64 // mirrors bytes for the JSON totals
	streamed      map[string]int64 // body bytes by source as written: the traffic history's rates
	upstreamBytes int64            // mirrors upstream for the JSON totals
}

func newMetrics() *metrics {
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dregistry_requests_total", Help: "Registry requests by route and status code."}, []string{"route", "code"}),
		bytes:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dregistry_served_bytes_total", Help: "Bytes served by source (containerd, swarm, upstream, ...)."}, []string{"source"}),
		ttfb: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "dregistry_time_to_first_byte_seconds", Help: "Time to first byte of registry responses.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8)}, []string{"route"}),
		// 5 ms to about 5 min: a manifest from containerd up to a large
		// layer pulled through from a slow upstream.
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "dregistry_pull_duration_seconds", Help: "Duration of registry responses until their last byte, by source (none: nothing had it).",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 9)}, []string{"source"}),
		upstream: prometheus.NewCounter(prometheus.CounterOpts{Name: "dregistry_upstream_bytes_total", Help: "Bytes this node fetched from upstream registries (blob bodies and manifests)."}),
		served:   map[string]int64{},
		streamed: map[string]int64{},
	}
}

// register also adds the Go runtime and process collectors, so go_goroutines
// and process_resident_memory_bytes show leaks without exposing pprof.
func (m *metrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.requests, m.bytes, m.ttfb, m.duration, m.upstream,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (m *metrics) servedBySource() map[string]int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]int64, len(m.served))
	for k, v := range m.served {
		out[k] = v
	}
	return out
}

// streamedBySource copies the bytes written so far by source.
func (m *metrics) streamedBySource() map[string]int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]int64, len(m.streamed))
	for k, v := range m.streamed {
		out[k] = v
	}
	return out
}

func (m *metrics) addUpstream(n int64) {
	if n <= 0 {
		return
	}
	m.upstream.Add(float64(n))
	m.mu.Lock()
	m.upstreamBytes += n
	m.mu.Unlock()
}

func (m *metrics) upstreamFetched() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.upstreamBytes
}

// Observer records each registry response; it satisfies registry.Observer.
type Observer struct{ m *metrics }

// Streamed counts body bytes of a response by source as they are written
// (registry.StreamObserver): the traffic history's rates by source.
func (o *Observer) Streamed(source string, bytes int64) {
	o.m.mu.Lock()
	o.m.streamed[source] += bytes
	o.m.mu.Unlock()
}

// Served records one response.
func (o *Observer) Served(route, source string, status int, bytes int64, ttfb, total time.Duration) {
	o.m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	o.m.ttfb.WithLabelValues(route).Observe(ttfb.Seconds())
	durationSource := source
	if durationSource == "" {
		durationSource = "none"
	}
	o.m.duration.WithLabelValues(durationSource).Observe(total.Seconds())
	if bytes > 0 && source != "" {
		o.m.bytes.WithLabelValues(source).Add(float64(bytes))
		o.m.mu.Lock()
		o.m.served[source] += bytes
		o.m.mu.Unlock()
	}
}
