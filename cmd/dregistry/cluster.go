package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/egress"
	"github.com/dregistry/dregistry/swarm"
	"github.com/dregistry/dregistry/tracker"
)

// nodeName is the member name: --node-name, else the hostname qualified by
// the advertised address, so several daemons on one host stay distinct.
func nodeName(cfg daemonConfig) string {
	if cfg.NodeName != "" {
		return cfg.NodeName
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	return host + "-" + cfg.AdvertiseAddr
}

// advertised joins the advertised IP with the port of a listen address.
func advertised(ip, listen, flag string) (netip.AddrPort, error) {
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("--%s: %w", flag, err)
	}
	ap, err := netip.ParseAddrPort(net.JoinHostPort(ip, port))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("--%s: %w", flag, err)
	}
	if ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("--%s needs a fixed port: peers are told it", flag)
	}
	return ap, nil
}

// trackerConfig derives the tracker's configuration from the daemon's and
// the cluster keys (nil without --cluster-key-file).
func trackerConfig(cfg daemonConfig, keys [][]byte) (tracker.Config, error) {
	gossip, err := advertised(cfg.AdvertiseAddr, cfg.GossipAddr, "gossip-addr")
	if err != nil {
		return tracker.Config{}, err
	}
	peerHTTP, err := advertised(cfg.AdvertiseAddr, cfg.HTTPAddr, "http-addr")
	if err != nil {
		return tracker.Config{}, err
	}
	torrent, err := advertised(cfg.AdvertiseAddr, cfg.TorrentAddr, "torrent-addr")
	if err != nil {
		return tracker.Config{}, err
	}
	tc := tracker.DefaultConfig()
	tc.Name, tc.GossipAddr, tc.AdvertiseAddr = nodeName(cfg), cfg.GossipAddr, gossip.String()
	tc.Keys, tc.PeerHTTPAddr, tc.TorrentAddr = keys, peerHTTP.String(), torrent
	tc.Egress, tc.Version = cfg.Egress, buildVersion()
	tc.ReconnectInterval, tc.ReconnectTimeout = cfg.ReconnectInterval, cfg.ReconnectTimeout
	return tc, nil
}

// seedersOf adapts the tracker's lookup to what the swarm consumes.
type seedersOf struct{ t *tracker.Tracker }

func (s seedersOf) Seeders(d digest.Digest) []swarm.Peer {
	found := s.t.Lookup(d)
	peers := make([]swarm.Peer, 0, len(found))
	for _, f := range found {
		peers = append(peers, swarm.Peer{TorrentAddr: f.TorrentAddr, HTTPAddr: f.HTTPAddr, Partial: !f.Complete})
	}
	return peers
}

var (
	_ swarm.Seeders = seedersOf{}
	_ swarm.Members = (*tracker.Tracker)(nil)
)

// egressCluster adapts the tracker's membership to what the egress consumes.
type egressCluster struct{ t *tracker.Tracker }

func (c egressCluster) Members() []egress.Member {
	all := c.t.Members()
	out := make([]egress.Member, 0, len(all))
	for _, m := range all {
		out = append(out, egress.Member{Name: m.Name, HTTPAddr: m.HTTPAddr, Egress: m.Egress})
	}
	return out
}

var _ egress.Cluster = egressCluster{}
