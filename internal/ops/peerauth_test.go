package ops

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/peerauth"
)

// TestKeyedStatsNeedATokenFromElsewhere: in a keyed cluster the stats and
// the status page answer this host and signed requests; a member's
// address alone gets 403. /metrics answers anyone (Prometheus scrapes it).
func TestKeyedStatsNeedATokenFromElsewhere(t *testing.T) {
	_, c, tr := newTestServer(t)
	k, err := peerauth.New([][]byte{bytes.Repeat([]byte{1}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Node: "node3", Cluster: c, Torrents: tr, Gate: &peerauth.Gate{Keys: k, Member: c.IsMember}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, remote string
		sign               bool
		want               int
	}{
		{"stats from 127.0.0.1", "/admin/v1/stats", "127.0.0.1:1", false, 200},
		{"stats from a member address, unsigned", "/admin/v1/stats", "10.0.0.2:1", false, 403},
		{"stats from a member address, signed", "/admin/v1/stats", "10.0.0.2:1", true, 200},
		{"stats from anywhere, signed", "/admin/v1/stats", "198.18.0.9:1", true, 200},
		{"status page, unsigned", "/status", "10.0.0.2:1", false, 403},
		{"traffic from 127.0.0.1", "/admin/v1/traffic", "127.0.0.1:1", false, 200},
		{"traffic from a member address, unsigned", "/admin/v1/traffic", "10.0.0.2:1", false, 403},
		{"traffic from anywhere, signed", "/admin/v1/traffic", "198.18.0.9:1", true, 200},
		{"metrics, unsigned", "/metrics", "198.18.0.9:1", false, 200},
	} {
		req := httptest.NewRequest(http.MethodGet, "http://10.0.0.3:5000"+tc.path, nil)
		req.RemoteAddr = tc.remote
		if tc.sign {
			req.Header.Set(peerauth.Header, k.Sign("node1", req.Method, req.Host, req.RequestURI, time.Now()))
		}
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, rec.Code, rec.Body, tc.want)
		}
	}
}
