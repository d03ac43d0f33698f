package ops

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/swarm"
	"github.com/dregistry/dregistry/tracker"
)

// Cluster is what ops reads of the tracker.
type Cluster interface {
	Members() []tracker.Member
	Stats() tracker.Stats
}

// Torrents is what ops reads of the swarm.
type Torrents interface {
	Stats() swarm.Stats
}

// Config configures a Server. Cluster, Torrents and Gate are required;
// there are no defaults.
type Config struct {
	Node     string // this node's name, shown in the stats
	Cluster  Cluster
	Torrents Torrents
	// Gate admits remote stats and status requests (AdmitAdmin: this host
	// always, members by token in a keyed cluster): the node's one gate.
	Gate *peerauth.Gate
	// Preheats, when set, lists the preheats running on this node.
	Preheats func() []PreheatStats
}

// Server serves /admin/v1/stats and /metrics and observes the registry.
type Server struct {
	cfg     Config
	reg     *prometheus.Registry
	metrics *metrics
	gate    *peerauth.Gate
	traffic *trafficRing
}

// Validate reports a Config New cannot run with.
func (c Config) Validate() error {
	if c.Cluster == nil || c.Torrents == nil {
		return errors.New("ops: Config.Cluster and Config.Torrents are required")
	}
	if c.Gate == nil {
		return errors.New("ops: Config.Gate is required: it admits the stats and status requests")
	}
	return nil
}

// New builds a Server with its own Prometheus registry.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, reg: prometheus.NewRegistry(), gate: cfg.Gate, traffic: &trafficRing{}}
	s.metrics = newMetrics()
	if err := s.metrics.register(s.reg); err != nil {
		return nil, fmt.Errorf("ops: register metrics: %w", err)
	}
	if err := s.reg.Register(&stateCollector{cluster: cfg.Cluster, torrents: cfg.Torrents}); err != nil {
		return nil, fmt.Errorf("ops: register collector: %w", err)
	}
	return s, nil
}

// Register adds a collector of the daemon's own (the seeding loop's
// counters) to /metrics.
func (s *Server) Register(c prometheus.Collector) error {
	if err := s.reg.Register(c); err != nil {
		return fmt.Errorf("ops: register: %w", err)
	}
	return nil
}

// Observer is the registry handler's observer (registry.Observer).
func (s *Server) Observer() *Observer { return &Observer{m: s.metrics} }

// Handler serves /, /status, /admin/v1/stats, /admin/v1/traffic and
// /metrics.
//
// The status page, the stats and the traffic history are for this host
// and members (they name members, digests and peers). /metrics answers anyone who reaches the
// port: Prometheus scrapes it from elsewhere, and it carries counters and
// gauges only — no digest, name or address.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /admin/v1/stats", s.allowed(http.HandlerFunc(s.serveStats)))
	mux.Handle("GET /admin/v1/traffic", s.allowed(http.HandlerFunc(s.serveTraffic)))
	mux.Handle("GET /{$}", s.allowed(http.HandlerFunc(serveStatus)))
	mux.Handle("GET /status", s.allowed(http.HandlerFunc(serveStatus)))
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	return mux
}

func (s *Server) allowed(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.gate.AdmitAdmin(w, r) {
			next.ServeHTTP(w, r)
		}
	})
}

func (s *Server) serveStats(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s.snapshot())
}

// snapshot assembles the current Stats.
func (s *Server) snapshot() Stats {
	out := Stats{Version: SchemaVersion, Node: s.cfg.Node, Members: []MemberStats{}, Torrents: []TorrentStats{}}
	members := s.cfg.Cluster.Members()
	for _, m := range members {
		roles := []string{"node"}
		if m.Egress {
			roles = append(roles, "egress")
		}
		out.Members = append(out.Members, MemberStats{Name: m.Name, Address: m.GossipAddr.String(), Roles: roles, State: m.State})
	}
	byIP := namesByIP(members)
	sw := s.cfg.Torrents.Stats()
	for _, t := range sw.Torrents {
		ts := TorrentStats{Digest: t.Digest.String(), Size: t.Size, State: "downloading", Verified: t.Verified,
			Completed: t.BytesCompleted, Peers: t.ConnectedPeers, ReceivedFrom: map[string]int64{}, Uploaded: t.UploadedBytes}
		if t.Seeding {
			ts.State = "seeding"
		}
		if t.Size > 0 {
			ts.Progress = float64(t.BytesCompleted) / float64(t.Size)
		}
		for ip, n := range t.ReceivedFrom {
			name := ip
			if a, err := netip.ParseAddr(ip); err == nil {
				if m, ok := byIP[a.Unmap().String()]; ok {
					name = m
				}
			}
			ts.ReceivedFrom[name] += n
			ts.Downloaded += n
		}
		out.Totals.Downloaded += ts.Downloaded
		out.Torrents = append(out.Torrents, ts)
	}
	out.Totals.ServedBySource = s.metrics.servedBySource()
	// What the egress source served came from the upstream (fetched once
	// for the cluster by its owner), as does a plain upstream source's.
	out.Totals.UpstreamBytes = out.Totals.ServedBySource["upstream"] + out.Totals.ServedBySource["egress"]
	out.Totals.UpstreamSaved = out.Totals.ServedBySource["containerd"] + out.Totals.ServedBySource["swarm"]
	out.Totals.UpstreamFetched = s.metrics.upstreamFetched()
	out.Totals.SwarmUploaded = sw.UploadedBytes
	out.Totals.SwarmDownloadedTotal = sw.DownloadedBytes
	out.Totals.SwarmWasted = sw.WastedBytes
	out.Totals.SwarmRequestsStolen = sw.RequestsStolen
	out.Totals.ShareRatio = shareRatio(sw.UploadedBytes, sw.DownloadedBytes)
	peers := peersByName(sw.Peers, byIP)
	out.Peers = make([]PeerStats, 0, len(peers))
	for _, p := range peers {
		out.Peers = append(out.Peers, p)
	}
	sort.Slice(out.Peers, func(i, j int) bool { return out.Peers[i].Name < out.Peers[j].Name })
	out.Rates = s.traffic.latest()
	out.Preheats = []PreheatStats{}
	if s.cfg.Preheats != nil {
		out.Preheats = append(out.Preheats, s.cfg.Preheats()...)
	}
	return out
}

// memberNames maps the members' gossip and torrent IPs to their names.
func (s *Server) memberNames() map[string]string { return namesByIP(s.cfg.Cluster.Members()) }

func namesByIP(members []tracker.Member) map[string]string {
	byIP := make(map[string]string, 2*len(members))
	for _, m := range members {
		byIP[m.TorrentAddr.Addr().Unmap().String()] = m.Name
		byIP[m.GossipAddr.Addr().Unmap().String()] = m.Name
	}
	return byIP
}

// peersByName sums the swarm's traffic per peer IP by member name; an IP no
// member has keeps its address as its name.
func peersByName(byIPTraffic map[string]swarm.PeerTraffic, byIP map[string]string) map[string]PeerStats {
	out := make(map[string]PeerStats, len(byIPTraffic))
	for ip, t := range byIPTraffic {
		name := ip
		if a, err := netip.ParseAddr(ip); err == nil {
			if m, ok := byIP[a.Unmap().String()]; ok {
				name = m
			}
		}
		p := out[name]
		p.Name, p.Uploaded, p.Downloaded = name, p.Uploaded+t.Uploaded, p.Downloaded+t.Downloaded
		out[name] = p
	}
	return out
}

// shareRatio is uploaded/downloaded, nil when nothing was downloaded: a
// ratio over nothing is undefined, and a pure seeder (an egress node) is
// then described by its uploaded bytes alone.
func shareRatio(up, down int64) *float64 {
	if down <= 0 {
		return nil
	}
	r := float64(up) / float64(down)
	return &r
}
