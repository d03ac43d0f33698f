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
		Torrents: []ops.TorrentStats{{Digest: "sha256:0123456789abcdef0123", Size: 100, State: "downloading", Progress: 0.5, Peers: 2,
			ReceivedFrom: map[string]int64{"node1": 30, "node2": 20}, Uploaded: 4567}},
		Totals: ops.Totals{ServedBySource: map[string]int64{"swarm": 40}, UpstreamSaved: 40, SwarmUploaded: 90, SwarmDownloadedTotal: 60, ShareRatio: &ratio}})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSwarmStatsTable(t *testing.T) {
	srv := statsServer(t, sampleStats(t), 200)
	var out bytes.Buffer
	if err := runStats(context.Background(), &out, &http.Client{Timeout: 5 * time.Second}, srv.URL, false, false, time.Second); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NODE node3", "node1", "node,egress", "[#####.....]  50%", "node1=30 node2=20", "swarm", "upstream bytes saved",
		"4567", "up 90, down 60, share ratio 1.50"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestSwarmStatsTableWithoutDownloads(t *testing.T) {
	srv := statsServer(t, `{"version":1,"node":"egress","totals":{"swarmUploadedBytes":7,"shareRatio":null}}`, 200)
	var out bytes.Buffer
	if err := runStats(context.Background(), &out, &http.Client{Timeout: 5 * time.Second}, srv.URL, false, false, time.Second); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "up 7, down 0, share ratio - (nothing downloaded)") {
		t.Errorf("table:\n%s", out.String())
	}
}

func TestSwarmStatsJSONAsIs(t *testing.T) {
	body := sampleStats(t)
	srv := statsServer(t, body, 200)
	var out bytes.Buffer
	if err := runStats(context.Background(), &out, &http.Client{Timeout: 5 * time.Second}, srv.URL, true, false, time.Second); err != nil {
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
		if err := runStats(context.Background(), &bytes.Buffer{}, &http.Client{Timeout: 5 * time.Second}, srv.URL, false, false, time.Second); err == nil {
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
	if err := runStats(ctx, &out, &http.Client{Timeout: 5 * time.Second}, srv.URL, false, true, time.Millisecond); err != nil {
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
