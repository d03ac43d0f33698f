package main

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/peerauth"
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

// torrentsHandler serves the swarm's torrents to this host and members only.
func torrentsHandler(gate *peerauth.Gate, sw *swarm.Swarm) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !adminAllowed(w, r, gate) {
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

// adminAllowed admits GETs from this host and members (peerauth.Gate),
// answering the rest.
func adminAllowed(w http.ResponseWriter, r *http.Request, gate *peerauth.Gate) bool {
	if !gate.AdmitAdmin(w, r) {
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

// seedersHandler serves the tracker's lookup to this host and members only.
func seedersHandler(gate *peerauth.Gate, t *tracker.Tracker) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !adminAllowed(w, r, gate) {
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
