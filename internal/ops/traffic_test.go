package ops

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/dregistry/dregistry/swarm"
)

func getJSON(t *testing.T, s *Server, path string, v any) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.RemoteAddr = "127.0.0.1:1"
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// Two samples 2 s apart give the bytes per second served by each source and
// exchanged with each peer, peers named by member; /admin/v1/stats carries
// the newest sample and the totals per peer.
func TestTrafficRatesBySourceAndPeer(t *testing.T) {
	s, _, tr := newTestServer(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s.Observer().Streamed("containerd", 1000) // as the handler writes
	s.Observer().Served("blob", "containerd", 200, 1000, time.Millisecond, time.Millisecond)
	tr.stats.Peers = map[string]swarm.PeerTraffic{"10.0.0.1": {Downloaded: 100}}
	s.sampleTraffic(t0)

	var st Stats
	getJSON(t, s, "/admin/v1/stats", &st)
	if st.Rates != nil {
		t.Fatalf("rates after the baseline only: %+v", st.Rates)
	}

	s.Observer().Streamed("containerd", 3000) // as the handler writes
	s.Observer().Served("blob", "containerd", 200, 3000, time.Millisecond, time.Millisecond)
	s.Observer().Streamed("swarm", 4096) // as the handler writes
	s.Observer().Served("blob", "swarm", 200, 4096, time.Millisecond, time.Millisecond)
	tr.stats.Peers = map[string]swarm.PeerTraffic{
		"10.0.0.1":  {Downloaded: 100 + 8192, Uploaded: 2048}, // node1
		"10.0.0.2":  {Uploaded: 0},                            // node2, idle
		"10.9.9.9":  {Downloaded: 20},                         // no member's
		"127.0.0.1": {},
	}
	s.sampleTraffic(t0.Add(2 * time.Second))

	var tf Traffic
	getJSON(t, s, "/admin/v1/traffic", &tf)
	if tf.Version != SchemaVersion || tf.Node != "node3" || tf.IntervalSeconds != 2 || len(tf.Samples) != 1 {
		t.Fatalf("traffic: %+v", tf)
	}
	got := tf.Samples[0]
	if !got.Time.Equal(t0.Add(2*time.Second)) || got.Seconds != 2 {
		t.Errorf("sample time %v, %v s", got.Time, got.Seconds)
	}
	for src, want := range map[string]float64{"containerd": 1500, "swarm": 2048} {
		if got.Served[src] != want {
			t.Errorf("served by %s: %v B/s, want %v", src, got.Served[src], want)
		}
	}
	wantPeers := map[string]PeerRate{"node1": {Up: 1024, Down: 4096}, "10.9.9.9": {Down: 10}}
	if len(got.Peers) != len(wantPeers) {
		t.Errorf("peers %+v, want %+v (idle peers left out)", got.Peers, wantPeers)
	}
	for name, want := range wantPeers {
		if got.Peers[name] != want {
			t.Errorf("peer %s: %+v, want %+v", name, got.Peers[name], want)
		}
	}

	getJSON(t, s, "/admin/v1/stats", &st)
	if st.Rates == nil || st.Rates.Served["containerd"] != 1500 {
		t.Fatalf("stats rates: %+v", st.Rates)
	}
	if len(st.Peers) != 4 || st.Peers[2] != (PeerStats{Name: "node1", Uploaded: 2048, Downloaded: 8292}) || st.Peers[0].Name != "10.9.9.9" {
		t.Fatalf("stats peers: %+v", st.Peers)
	}
}

// The history keeps the last 5 minutes, oldest first, and a clock that
// did not move adds nothing.
func TestTrafficHistoryIsBounded(t *testing.T) {
	s, _, _ := newTestServer(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range trafficSamples + 41 {
		s.sampleTraffic(t0.Add(time.Duration(i) * trafficInterval))
	}
	s.sampleTraffic(t0.Add(time.Duration(trafficSamples+40) * trafficInterval))
	got := s.traffic.list()
	if len(got) != trafficSamples {
		t.Fatalf("%d samples, want %d", len(got), trafficSamples)
	}
	for i, smp := range got {
		if want := t0.Add(time.Duration(41+i) * trafficInterval); !smp.Time.Equal(want) {
			t.Fatalf("sample %d at %v, want %v", i, smp.Time, want)
		}
	}
	if trafficInterval*trafficSamples != 5*time.Minute {
		t.Errorf("history spans %v", trafficInterval*trafficSamples)
	}
}
