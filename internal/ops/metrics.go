package ops

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics holds the request-path metrics the Observer sets.
type metrics struct {
	requests *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	ttfb     *prometheus.HistogramVec

	mu     sync.Mutex
	served map[string]int64 // mirrors bytes for the JSON totals
}

func newMetrics() *metrics {
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dregistry_requests_total", Help: "Registry requests by route and status code."}, []string{"route", "code"}),
		bytes:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dregistry_served_bytes_total", Help: "Bytes served by source (containerd, swarm, upstream, ...)."}, []string{"source"}),
		ttfb: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "dregistry_time_to_first_byte_seconds", Help: "Time to first byte of registry responses.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8)}, []string{"route"}),
		served: map[string]int64{},
	}
}

// register also adds the Go runtime and process collectors, so go_goroutines
// and process_resident_memory_bytes show leaks without exposing pprof.
func (m *metrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.requests, m.bytes, m.ttfb,
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

// Observer records each registry response; it satisfies registry.Observer.
type Observer struct{ m *metrics }

// Served records one response.
func (o *Observer) Served(route, source string, status int, bytes int64, ttfb time.Duration) {
	o.m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	o.m.ttfb.WithLabelValues(route).Observe(ttfb.Seconds())
	if bytes > 0 && source != "" {
		o.m.bytes.WithLabelValues(source).Add(float64(bytes))
		o.m.mu.Lock()
		o.m.served[source] += bytes
		o.m.mu.Unlock()
	}
}

// stateCollector reads the tracker and swarm at scrape time.
type stateCollector struct {
	cluster  Cluster
	torrents Torrents
}

// Descs are built per call so the package holds no shared values.
func descs() (descMembers, descAnnounce, descDropped, descTorrents, descPeers, descDown *prometheus.Desc) {
	return prometheus.NewDesc("dregistry_gossip_members", "Live gossip members, this node included.", nil, nil),
		prometheus.NewDesc("dregistry_announcements", "Seeder announcements held (member, digest), tombstones included.", nil, nil),
		prometheus.NewDesc("dregistry_gossip_dropped_messages_total", "Malformed or oversized gossip messages dropped.", nil, nil),
		prometheus.NewDesc("dregistry_active_torrents", "Torrents by state.", []string{"state"}, nil),
		prometheus.NewDesc("dregistry_connected_peers", "Peer connections summed over torrents.", nil, nil),
		prometheus.NewDesc("dregistry_swarm_downloaded_bytes", "Useful piece bytes received from peers (torrents still held).", nil, nil)
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	descMembers, descAnnounce, descDropped, descTorrents, descPeers, descDown := descs()
	for _, d := range []*prometheus.Desc{descMembers, descAnnounce, descDropped, descTorrents, descPeers, descDown} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	descMembers, descAnnounce, descDropped, descTorrents, descPeers, descDown := descs()
	ts := c.cluster.Stats()
	ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(ts.Members))
	ch <- prometheus.MustNewConstMetric(descAnnounce, prometheus.GaugeValue, float64(ts.Announcements))
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(ts.Dropped))
	var seeding, downloading, peers, down float64
	for _, t := range c.torrents.Stats().Torrents {
		if t.Seeding {
			seeding++
		} else {
			downloading++
		}
		peers += float64(t.ConnectedPeers)
		for _, n := range t.ReceivedFrom {
			down += float64(n)
		}
	}
	ch <- prometheus.MustNewConstMetric(descTorrents, prometheus.GaugeValue, seeding, "seeding")
	ch <- prometheus.MustNewConstMetric(descTorrents, prometheus.GaugeValue, downloading, "downloading")
	ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, peers)
	ch <- prometheus.MustNewConstMetric(descDown, prometheus.GaugeValue, down)
}
