package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/ops"
	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/tracker"
)

func statsServer(t *testing.T, body string, code int) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/admin/v1/stats" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(code)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func sampleStats(t *testing.T) string {
	t.Helper()
	ratio := 1.5
	b, err := json.Marshal(ops.Stats{Version: ops.SchemaVersion, Node: "node3",
		Members: []ops.MemberStats{{Name: "node1", Address: "127.0.0.1:7946", Roles: []string{"node", "egress"}, State: "alive"}},
		Torrents: []ops.TorrentStats{{Digest: "sha256:0123456789abcdef0123", Size: 3 << 30, State: "downloading", Progress: 0.5, Peers: 2,
			ReceivedFrom: map[string]int64{"node1": 30, "node2": 3 << 20}, Uploaded: 4567}},
		Totals: ops.Totals{ServedBySource: map[string]int64{"swarm": 40, "containerd": 1 << 20}, UpstreamSaved: 40, SwarmUploaded: 90, SwarmDownloadedTotal: 60, ShareRatio: &ratio},
		Peers:  []ops.PeerStats{{Name: "node1", Uploaded: 5 << 20, Downloaded: 1536}},
		Rates: &ops.TrafficSample{Seconds: 2, Served: map[string]float64{"swarm": 1.5 * (1 << 20), "egress": 512},
			Peers: map[string]ops.PeerRate{"node1": {Up: 2048, Down: 100}}}})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSwarmStatsTable(t *testing.T) {
	srv := statsServer(t, sampleStats(t), 200)
	var out bytes.Buffer
	if err := runStats(context.Background(), &out, &http.Client{Timeout: 5 * time.Second}, srv.URL, printHuman, false, time.Second); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NODE node3", "node1", "node,egress", "[#####.....]  50%", "node1=30 B, node2=3.0 MiB", "upstream bytes saved",
		"3.0 GiB", "4.5 KiB", "up 90 B, down 60 B, share ratio 1.50",
		"RATE (last 2s)", "swarm       40 B          1.5 MiB/s", "containerd  1.0 MiB       0 B/s", "egress      0 B           512 B/s",
		"PEER   UP       DOWN     UP RATE    DOWN RATE", "node1  5.0 MiB  1.5 KiB  2.0 KiB/s  100 B/s"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

// --bytes prints every size and rate as an exact count.
func TestSwarmStatsTableInBytes(t *testing.T) {
	srv := statsServer(t, sampleStats(t), 200)
	var out bytes.Buffer
	if err := runStats(context.Background(), &out, &http.Client{Timeout: 5 * time.Second}, srv.URL, printBytes, false, time.Second); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"3221225472", "node1=30, node2=3145728", "4567", "containerd  1048576       0 B/s", "swarm       40            1572864 B/s",
		"node1  5242880  1536  2048 B/s  100 B/s", "up 90, down 60, share ratio 1.50"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "iB") {
		t.Errorf("--bytes printed a unit:\n%s", out.String())
	}
}

func TestHumanBytes(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{1, "1 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{1<<20 - 1, "1.0 MiB"}, // 1023.999 KiB rounds up a unit, not to "1024.0 KiB"
		{1 << 20, "1.0 MiB"},
		{3 << 19, "1.5 MiB"},
		{1<<30 - 1<<20, "1023.0 MiB"},
		{5 << 30, "5.0 GiB"},
		{1 << 40, "1.0 TiB"},
		{1<<40 + 1<<39, "1.5 TiB"},
		{1 << 50, "1.0 PiB"},
		{1<<63 - 1, "8.0 EiB"},
	} {
		if got := humanBytes(tc.n); got != tc.want {
			t.Errorf("humanBytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestHumanRate(t *testing.T) {
	for _, tc := range []struct {
		bps  float64
		want string
	}{
		{0, "0 B/s"},
		{0.4, "0 B/s"},
		{1023, "1023 B/s"},
		{1023.7, "1.0 KiB/s"}, // would round to "1024 B/s"
		{1024, "1.0 KiB/s"},
		{1.5 * (1 << 20), "1.5 MiB/s"},
		{110 * (1 << 20), "110.0 MiB/s"},
		{2.25 * (1 << 30), "2.2 GiB/s"},
		{1 << 40, "1.0 TiB/s"},
	} {
		if got := humanRate(tc.bps); got != tc.want {
			t.Errorf("humanRate(%v) = %q, want %q", tc.bps, got, tc.want)
		}
	}
}

func TestSwarmStatsTableWithoutDownloads(t *testing.T) {
	srv := statsServer(t, `{"version":1,"node":"egress","totals":{"swarmUploadedBytes":7,"shareRatio":null}}`, 200)
	var out bytes.Buffer
	if err := runStats(context.Background(), &out, &http.Client{Timeout: 5 * time.Second}, srv.URL, printHuman, false, time.Second); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "up 7 B, down 0 B, share ratio - (nothing downloaded)") || !strings.Contains(out.String(), "RATE (last -)") {
		t.Errorf("table:\n%s", out.String())
	}
}

func TestSwarmStatsJSONAsIs(t *testing.T) {
	body := sampleStats(t)
	srv := statsServer(t, body, 200)
	var out bytes.Buffer
	if err := runStats(context.Background(), &out, &http.Client{Timeout: 5 * time.Second}, srv.URL, printJSON, false, time.Second); err != nil {
		t.Fatal(err)
	}
	if out.String() != body {
		t.Fatalf("got %q, want %q", out.String(), body)
	}
}

func TestSwarmStatsErrors(t *testing.T) {
	for name, srv := range map[string]*httptest.Server{
		"forbidden": statsServer(t, "only loopback", 403),
		"garbage":   statsServer(t, "{", 200),
		"version":   statsServer(t, `{"version":99}`, 200),
	} {
		if err := runStats(context.Background(), &bytes.Buffer{}, &http.Client{Timeout: 5 * time.Second}, srv.URL, printHuman, false, time.Second); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestSwarmStatsWatchRedrawsUntilCancelled(t *testing.T) {
	body := sampleStats(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	requests := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests++
		if requests == 3 {
			cancel() // the user presses Ctrl-C while the third frame loads
		}
		_, _ = w.Write([]byte(body))
	}))
	defer srv.Close()
	var out bytes.Buffer
	if err := runStats(ctx, &out, &http.Client{Timeout: 5 * time.Second}, srv.URL, printHuman, true, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "\033[H\033[2J"); n < 2 {
		t.Fatalf("%d cleared frames, want at least 2", n)
	}
}

// TestStatsSignsWithTheClusterKey: with --cluster-key-file the CLI's
// request carries a token a keyed node accepts.
func TestStatsSignsWithTheClusterKey(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{5}, 32))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := tracker.LoadKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := peerauth.New(keys)
	if err != nil {
		t.Fatal(err)
	}
	gate := &peerauth.Gate{Keys: pk}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if gate.AdmitPeer(w, r) {
			w.Write([]byte(`{"version":1,"node":"n"}`))
		}
	}))
	defer srv.Close()
	signed, err := statsClient(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fetchStats(context.Background(), signed, srv.URL); err != nil {
		t.Fatalf("signed: %v", err)
	}
	unsigned, _ := statsClient("")
	if _, err := fetchStats(context.Background(), unsigned, srv.URL); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("unsigned: %v, want a 403", err)
	}
	if _, err := statsClient(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("a missing key file was accepted")
	}
}
