package ops

import (
	"encoding/json"
	"github.com/prometheus/client_golang/prometheus"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/swarm"
	"github.com/dregistry/dregistry/tracker"
)

// fakeCluster and fakeTorrents stand in for the tracker and swarm, which
// this test does not test.
type fakeCluster struct {
	members []tracker.Member
	stats   tracker.Stats
}

func (f *fakeCluster) Members() []tracker.Member { return f.members }
func (f *fakeCluster) Stats() tracker.Stats      { return f.stats }
func (f *fakeCluster) IsMember(ip netip.Addr) bool {
	for _, m := range f.members {
		if m.GossipAddr.Addr() == ip {
			return true
		}
	}
	return false
}

type fakeTorrents struct{ stats swarm.Stats }

func (f *fakeTorrents) Stats() swarm.Stats { return f.stats }

func newTestServer(t *testing.T) (*Server, *fakeCluster, *fakeTorrents) {
	t.Helper()
	c := &fakeCluster{members: []tracker.Member{
		{Name: "node1", GossipAddr: netip.MustParseAddrPort("10.0.0.1:7946"), TorrentAddr: netip.MustParseAddrPort("10.0.0.1:6881"), Egress: true, State: "alive"},
		{Name: "node2", GossipAddr: netip.MustParseAddrPort("10.0.0.2:7946"), TorrentAddr: netip.MustParseAddrPort("10.0.0.2:6881"), State: "alive"},
	}}
	tr := &fakeTorrents{}
	s, err := New(Config{Node: "node3", Cluster: c, Torrents: tr, Gate: keylessGate(c)})
	if err != nil {
		t.Fatal(err)
	}
	return s, c, tr
}

// keylessGate admits c's members by address, as the daemon's gate does
// without a cluster key.
func keylessGate(c *fakeCluster) *peerauth.Gate { return &peerauth.Gate{Member: c.IsMember} }

func TestNewRejectsMissingSources(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without Cluster and Torrents succeeded")
	}
}

func TestConfigValidates(t *testing.T) {
	c := &fakeCluster{}
	ok := Config{Node: "n", Cluster: c, Torrents: &fakeTorrents{}, Gate: keylessGate(c)}
	if err := ok.Validate(); err != nil {
		t.Fatalf("complete config: %v", err)
	}
	for name, edit := range map[string]func(*Config){
		"no cluster":  func(c *Config) { c.Cluster = nil },
		"no torrents": func(c *Config) { c.Torrents = nil },
		"no gate":     func(c *Config) { c.Gate = nil },
	} {
		c := ok
		edit(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: valid", name)
		}
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}

func TestStatsNamesPeersByMember(t *testing.T) {
	s, _, tr := newTestServer(t)
	d := digest.FromString("layer")
	tr.stats.Torrents = []swarm.TorrentStats{{Digest: d, Size: 100, BytesCompleted: 50, ConnectedPeers: 2,
		ReceivedFrom: map[string]int64{"10.0.0.1": 30, "10.0.0.2": 20, "10.9.9.9": 1}, UploadedBytes: 12}}
	tr.stats.UploadedBytes, tr.stats.DownloadedBytes = 30, 60
	tr.stats.WastedBytes, tr.stats.RequestsStolen = 5, 2
	s.Observer().Served("blob", "swarm", 200, 40, time.Millisecond, 3*time.Millisecond)
	s.Observer().Served("blob", "upstream", 200, 7, time.Millisecond, 2*time.Millisecond)

	req := httptest.NewRequest(http.MethodGet, "/admin/v1/stats", nil)
	req.RemoteAddr = "127.0.0.1:5555"
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var got Stats
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Version != SchemaVersion || len(got.Members) != 2 || got.Members[0].Roles[1] != "egress" {
		t.Fatalf("members: %+v", got)
	}
	tor := got.Torrents[0]
	if tor.ReceivedFrom["node1"] != 30 || tor.ReceivedFrom["node2"] != 20 || tor.ReceivedFrom["10.9.9.9"] != 1 || tor.Progress != 0.5 || tor.State != "downloading" || tor.Uploaded != 12 {
		t.Fatalf("torrent: %+v", tor)
	}
	if got.Totals.UpstreamSaved != 40 || got.Totals.UpstreamBytes != 7 || got.Totals.Downloaded != 51 ||
		got.Totals.SwarmUploaded != 30 || got.Totals.SwarmDownloadedTotal != 60 || got.Totals.ShareRatio == nil || *got.Totals.ShareRatio != 0.5 ||
		got.Totals.SwarmWasted != 5 || got.Totals.SwarmRequestsStolen != 2 {
		t.Fatalf("totals: %+v", got.Totals)
	}
}

// A node that downloaded nothing has no share ratio (JSON null), whatever
// it uploaded.
func TestShareRatioIsNullWithoutDownloads(t *testing.T) {
	s, _, tr := newTestServer(t)
	tr.stats.UploadedBytes = 1000
	req := httptest.NewRequest(http.MethodGet, "/admin/v1/stats", nil)
	req.RemoteAddr = "127.0.0.1:5555"
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if !strings.Contains(rec.Body.String(), `"shareRatio":null`) || !strings.Contains(rec.Body.String(), `"swarmUploadedBytes":1000`) {
		t.Fatalf("stats: %s", rec.Body)
	}
}

// The stats, the traffic history and the status page answer this host and
// members; an outsider gets a 403 that carries none of their data.
func TestStatsAnswersOnlyLoopbackAndMembers(t *testing.T) {
	s, _, tr := newTestServer(t)
	tr.stats.Peers = map[string]swarm.PeerTraffic{"10.0.0.1": {Uploaded: 1}}
	s.sampleTraffic(time.Now())
	s.sampleTraffic(time.Now().Add(trafficInterval))
	for _, path := range []string{"/admin/v1/stats", "/admin/v1/traffic", "/", "/status"} {
		for addr, want := range map[string]int{"127.0.0.1:1": 200, "[::1]:1": 200, "10.0.0.2:1": 200, "10.0.0.7:1": 403, "garbage": 403} {
			req := httptest.NewRequest(http.MethodGet, path, nil)
			req.RemoteAddr = addr
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, req)
			if rec.Code != want {
				t.Errorf("%s from %s: status %d, want %d", path, addr, rec.Code, want)
			}
			if body := rec.Body.String(); want == 403 && (strings.Contains(body, "node1") || strings.Contains(body, "samples") || strings.Contains(body, "<script")) {
				t.Errorf("%s from %s: the refusal carries data: %s", path, addr, body)
			}
		}
	}
}

func TestEveryMetricMoves(t *testing.T) {
	s, c, tr := newTestServer(t)
	c.stats = tracker.Stats{Members: 2, Announcements: 5, Dropped: 3,
		AnnouncementsSent: 4, AnnouncementsReceived: 6, WithdrawalsSent: 1, WithdrawalsReceived: 2}
	tr.stats.Torrents = []swarm.TorrentStats{
		{Digest: digest.FromString("a"), Seeding: true, ConnectedPeers: 1},
		{Digest: digest.FromString("b"), ConnectedPeers: 2, ReceivedFrom: map[string]int64{"10.0.0.1": 9}},
	}
	tr.stats.UploadedBytes, tr.stats.DownloadedBytes = 21, 9
	tr.stats.AuthRefused, tr.stats.AuthFailed = 7, 8
	s.Observer().Served("manifest", "containerd", 200, 11, 2*time.Millisecond, 3*time.Millisecond)
	readUpstream(t, s, []byte("seventeen bytes!!"), []byte(`{"manifest":1}`))
	want := map[string]string{
		"dregistry_requests_total":                  `dregistry_requests_total{code="200",route="manifest"} 1`,
		"dregistry_served_bytes_total":              `dregistry_served_bytes_total{source="containerd"} 11`,
		"dregistry_time_to_first_byte_seconds":      `dregistry_time_to_first_byte_seconds_count{route="manifest"} 1`,
		"dregistry_gossip_members":                  `dregistry_gossip_members 2`,
		"dregistry_announcements":                   `dregistry_announcements 5`,
		"dregistry_gossip_dropped_messages_total":   `dregistry_gossip_dropped_messages_total 3`,
		"dregistry_active_torrents":                 `dregistry_active_torrents{state="downloading"} 1`,
		"dregistry_connected_peers":                 `dregistry_connected_peers 3`,
		"dregistry_swarm_downloaded_bytes":          `dregistry_swarm_downloaded_bytes 9`,
		"dregistry_pull_duration_seconds":           `dregistry_pull_duration_seconds_count{source="containerd"} 1`,
		"dregistry_upstream_bytes_total":            `dregistry_upstream_bytes_total 40`,
		"dregistry_swarm_uploaded_bytes_total":      `dregistry_swarm_uploaded_bytes_total 21`,
		"dregistry_swarm_downloaded_bytes_total":    `dregistry_swarm_downloaded_bytes_total 9`,
		"dregistry_gossip_announcements_total":      "dregistry_gossip_announcements_total{direction=\"received\"} 6\ndregistry_gossip_announcements_total{direction=\"sent\"} 4",
		"dregistry_gossip_withdrawals_total":        "dregistry_gossip_withdrawals_total{direction=\"received\"} 2\ndregistry_gossip_withdrawals_total{direction=\"sent\"} 1",
		"dregistry_swarm_connections_refused_total": "dregistry_swarm_connections_refused_total{reason=\"handshake\"} 8\ndregistry_swarm_connections_refused_total{reason=\"not_member\"} 7",
	}
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	body := rec.Body.String()
	for name, line := range want {
		if !strings.Contains(body, line) {
			t.Errorf("%s: missing %q", name, line)
		}
	}
	families, err := s.reg.Gather()
	own := 0
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "dregistry_") {
			own++
		}
	}
	if err != nil || own != len(want) {
		t.Errorf("registered %d dregistry metric families (err %v), test checks %d", own, err, len(want))
	}
	// The runtime and process collectors are what the load test reads for leaks.
	for _, line := range []string{"\ngo_goroutines ", "\nprocess_resident_memory_bytes "} {
		if !strings.Contains(body, line) {
			t.Errorf("missing %q", line)
		}
	}
}

// The daemon's own counters (the seeding loop's failures) are served on
// /metrics beside the package's; registering a name twice is refused.
func TestRegisterServesTheDaemonsCollectors(t *testing.T) {
	s, _, _ := newTestServer(t)
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "dregistry_seed_failures_total", Help: "test"})
	if err := s.Register(c); err != nil {
		t.Fatal(err)
	}
	c.Add(2)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if !strings.Contains(rec.Body.String(), "dregistry_seed_failures_total 2") {
		t.Fatalf("registered counter missing from /metrics:\n%s", rec.Body)
	}
	if err := s.Register(prometheus.NewCounter(prometheus.CounterOpts{Name: "dregistry_seed_failures_total", Help: "again"})); err == nil {
		t.Fatal("registered the same metric twice")
	}
}
