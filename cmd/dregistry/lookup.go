package main

import (
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/tracker"
)

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
		if !localOrMember(t, r.RemoteAddr) {
			http.Error(w, "only loopback and cluster members may ask", http.StatusForbidden)
			return
		}
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
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
