package ops

import (
	"context"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
		{Digest: digest.FromString("layer"), Size: 3 << 20, BytesCompleted: 40 * (3 << 20) / 100, ConnectedPeers: 2, ReceivedFrom: map[string]int64{"10.0.0.1": 25 << 10, "10.0.0.2": 15 << 10}},
		{Digest: digest.FromString("seeded"), Size: 80, BytesCompleted: 80, Seeding: true, Verified: true, UploadedBytes: 7654},
	}
	tr.stats.UploadedBytes, tr.stats.DownloadedBytes = 9000, 4000
	s.Observer().Served("blob", "containerd", 200, 4321, time.Millisecond, 2*time.Millisecond)
	fillTraffic(s, tr, trafficSamples)
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	dom := string(runChromium(t, bin, "--dump-dom", srv.URL+"/status"))
	for _, want := range []string{"node3", "node1", "node, egress", "40%", "node1: 25.0 KiB", "node2: 15.0 KiB", "3.0 MiB", "seeding", "containerd",
		"7.5 KiB", `title="7654 bytes"`, "uploaded 8.8 KiB", "downloaded 3.9 KiB", "share ratio 2.25"} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered page lacks %q", want)
		}
	}
	if !strings.Contains(dom, `<p id="error" class="error"></p>`) {
		t.Errorf("page reports an error:\n%s", dom)
	}
	// The charts are inline SVG, one path per series, drawn through every
	// sample of the history; the axis is labelled in binary units.
	for _, series := range []string{"containerd", "swarm", "egress", "node1 up", "node1 down", "node2 up", "node2 down"} {
		m := regexp.MustCompile(`<path class="series" d="(M[^"]*)"[^>]*data-series="` + series + `"`).FindStringSubmatch(dom)
		if m == nil {
			t.Errorf("chart lacks the series %q", series)
			continue
		}
		if n := strings.Count(m[1], "L") + 1; n != trafficSamples {
			t.Errorf("series %q has %d points, want %d", series, n, trafficSamples)
		}
	}
	for _, want := range []string{"MiB/s", "-5m", "now", "Bytes per second served, by source"} {
		if !strings.Contains(dom, want) {
			t.Errorf("charts lack %q", want)
		}
	}
	if os.Getenv("DREGISTRY_SCREENSHOT") != "" {
		shot, err := filepath.Abs("../../docs/status-page.png")
		if err != nil {
			t.Fatal(err)
		}
		runChromium(t, bin, "--screenshot="+shot, "--window-size=1200,1000", "--hide-scrollbars", srv.URL+"/")
	}
}

// fillTraffic takes n+1 samples, 2 s apart and ending now, of two pulls:
// the first through the egress, trading with node1 and node2 in the swarm,
// the second from containerd.
func fillTraffic(s *Server, tr *fakeTorrents, n int) {
	start := time.Now().Add(-time.Duration(n) * trafficInterval)
	peers := map[string]swarm.PeerTraffic{}
	// triangle rises from 0 at a to peak at the middle and falls to 0 at b.
	triangle := func(i, a, b int, peak int64) int64 {
		if i <= a || i >= b {
			return 0
		}
		return peak * int64(min(i-a, b-i)) / int64((b-a)/2)
	}
	for i := 0; i <= n; i++ {
		secs := int64(trafficInterval / time.Second)
		add := map[string]int64{
			"egress":     triangle(i, 20, 50, 12<<20) * secs,
			"swarm":      triangle(i, 35, 95, 40<<20) * secs,
			"containerd": triangle(i, 110, 130, 25<<20) * secs,
		}
		for src, b := range add {
			s.Observer().Served("blob", src, 200, b, time.Millisecond, time.Millisecond)
		}
		for ip, share := range map[string]int64{"10.0.0.1": 3, "10.0.0.2": 2} {
			p := peers[ip]
			p.Downloaded += add["swarm"] * share / 5
			p.Uploaded += triangle(i, 45, 110, 9<<20) * secs * (5 - share) / 5
			peers[ip] = p
		}
		tr.stats.Peers = maps.Clone(peers)
		s.sampleTraffic(start.Add(time.Duration(i) * trafficInterval))
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

// The page works air-gapped: it loads nothing but itself and the JSON it
// polls from the same origin (the SVG namespace is a name, not a fetch).
func TestStatusPageLoadsNothingExternal(t *testing.T) {
	page := strings.ReplaceAll(string(statusPage), `"http://www.w3.org/2000/svg"`, "")
	for _, pat := range []string{"http://", "https://", "//cdn", " src=", " href=", "@import", "url(", "<link", "<iframe"} {
		if strings.Contains(page, pat) {
			t.Errorf("status page contains %q", pat)
		}
	}
	for _, poll := range regexp.MustCompile(`view\("([^"]+)"`).FindAllStringSubmatch(page, -1) {
		if !strings.HasPrefix(poll[1], "admin/v1/") {
			t.Errorf("status page polls %q, not its own admin API", poll[1])
		}
	}
}
