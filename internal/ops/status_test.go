package ops

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/swarm"
)

// chromium finds the headless browser, skipping (or failing under
// DREGISTRY_E2E=required) when it is missing.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("DREGISTRY_E2E") == "required" {
		t.Fatal("chromium is required (apt-get install -y chromium)")
	}
	t.Skip("chromium not installed (apt-get install -y chromium)")
	return ""
}

func runChromium(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=3000"}
	out, err := exec.CommandContext(ctx, bin, append(base, args...)...).Output()
	if err != nil {
		t.Fatalf("chromium %v: %v", args, err)
	}
	return out
}

func TestStatusPageShowsStatsInBrowser(t *testing.T) {
	bin := chromium(t)
	s, _, tr := newTestServer(t)
	tr.stats.Torrents = []swarm.TorrentStats{
		{Digest: digest.FromString("layer"), Size: 100, BytesCompleted: 40, ConnectedPeers: 2, ReceivedFrom: map[string]int64{"10.0.0.1": 25, "10.0.0.2": 15}},
		{Digest: digest.FromString("seeded"), Size: 80, BytesCompleted: 80, Seeding: true, Verified: true, UploadedBytes: 7654},
	}
	tr.stats.UploadedBytes, tr.stats.DownloadedBytes = 9000, 4000
	s.Observer().Served("blob", "containerd", 200, 4321, time.Millisecond, 2*time.Millisecond)
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	dom := string(runChromium(t, bin, "--dump-dom", srv.URL+"/status"))
	for _, want := range []string{"node3", "node1", "node, egress", "40%", "node1: 25", "node2: 15", "seeding", "containerd", "4321",
		"7654", "uploaded 9000", "downloaded 4000", "share ratio 2.25"} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered page lacks %q", want)
		}
	}
	if strings.Contains(dom, `id="error">cannot`) {
		t.Errorf("page reports an error:\n%s", dom)
	}
	if os.Getenv("DREGISTRY_SCREENSHOT") != "" {
		shot, err := filepath.Abs("../../docs/status-page.png")
		if err != nil {
			t.Fatal(err)
		}
		runChromium(t, bin, "--screenshot="+shot, "--window-size=1200,800", srv.URL+"/")
	}
}

func TestStatusPageServedAtRootAndStatus(t *testing.T) {
	s, _, _ := newTestServer(t)
	for _, path := range []string{"/", "/status"} {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.RemoteAddr = "127.0.0.1:1"
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), "admin/v1/stats") {
			t.Errorf("%s: %d", path, rec.Code)
		}
	}
}
