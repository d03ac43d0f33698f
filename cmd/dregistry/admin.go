package main

import (
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/swarm"
	"github.com/dregistry/dregistry/tracker"
)

// torrentsPath lists this node's torrents: GET /admin/v1/torrents.
const torrentsPath = "/admin/v1/torrents"

// torrentJSON is one torrent of the torrents answer.
type torrentJSON struct {
	Digest         string `json:"digest"`
	Size           int64  `json:"size"`
	Seeding        bool   `json:"seeding"`
	Verified       bool   `json:"verified"`
	BytesCompleted int64  `json:"bytesCompleted"`
	ConnectedPeers int    `json:"connectedPeers"`
	// ReceivedFrom counts the useful piece bytes received from each peer IP.
	ReceivedFrom map[string]int64 `json:"receivedFrom"`
}

// torrentsHandler serves the swarm's torrents to loopback and members only.
func torrentsHandler(t *tracker.Tracker, sw *swarm.Swarm) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !adminAllowed(w, r, t) {
			return
		}
		out := []torrentJSON{}
		for _, ts := range sw.Stats().Torrents {
			from := ts.ReceivedFrom
			if from == nil {
				from = map[string]int64{}
			}
			out = append(out, torrentJSON{
				Digest: ts.Digest.String(), Size: ts.Size, Seeding: ts.Seeding, Verified: ts.Verified,
				BytesCompleted: ts.BytesCompleted, ConnectedPeers: ts.ConnectedPeers, ReceivedFrom: from,
			})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
}

// adminAllowed admits GETs from loopback and members, answering the rest.
func adminAllowed(w http.ResponseWriter, r *http.Request, t *tracker.Tracker) bool {
	if !localOrMember(t, r.RemoteAddr) {
		http.Error(w, "only loopback and cluster members may ask", http.StatusForbidden)
		return false
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return false
	}
	return true
}

// seedersPath answers which members seed a digest, as this node's tracker
// sees it: GET /admin/v1/seeders/<digest>.
const seedersPath = "/admin/v1/seeders/"

// seederJSON is one entry of the seeders answer.
type seederJSON struct {
	Node        string `json:"node"`
	HTTPAddr    string `json:"httpAddr"`
	TorrentAddr string `json:"torrentAddr"`
	Complete    bool   `json:"complete"`
	Egress      bool   `json:"egress"`
}

// seedersHandler serves the tracker's lookup to loopback and members only.
func seedersHandler(t *tracker.Tracker) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !adminAllowed(w, r, t) {
			return
		}
		d, err := digest.Parse(strings.TrimPrefix(r.URL.Path, seedersPath))
		if err != nil {
			http.Error(w, "bad digest: "+err.Error(), http.StatusBadRequest)
			return
		}
		out := []seederJSON{}
		for _, s := range t.Lookup(d) {
			out = append(out, seederJSON{Node: s.Node, HTTPAddr: s.HTTPAddr, TorrentAddr: s.TorrentAddr.String(), Complete: s.Complete, Egress: s.Egress})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
}

// localOrMember admits loopback clients and cluster members.
func localOrMember(t *tracker.Tracker, remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	return ip.IsLoopback() || t.IsMember(ip)
}
