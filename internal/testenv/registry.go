package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// registryBinary is Debian's package of distribution 2.8.
const registryBinary = "docker-registry"

// markerAgent is the user agent of the request Requests sends to know the
// log has caught up; its lines are left out of the answer.
const markerAgent = "dregistry-testenv-marker"

// Registry is a real upstream registry (Debian's docker-registry) private to
// one test: filesystem storage in a temp dir, plain HTTP on a loopback address.
type Registry struct {
	Addr       string // host:port it listens on; also its name in image references
	Dir        string
	ConfigPath string
	// LogPath is its JSON log (stderr), one "response completed" line per
	// request; AccessLogPath is the combined-format access log (stdout).
	LogPath       string
	AccessLogPath string

	proc *Process
}

// StartRegistry starts docker-registry on addr (e.g. LoopbackIP(5)+":5500";
// not :5000, where a packaged registry service may listen on every address),
// waits for /v2/ and stops it in t.Cleanup. It skips (or fails when
// DREGISTRY_E2E=required) when docker-registry is not installed.
func StartRegistry(t testing.TB, addr string) *Registry {
	t.Helper()
	return StartRegistryIn(t, nil, addr)
}

// StartRegistryIn is StartRegistry inside network namespace ns (nil: the
// test's own); addr must be reachable from the test, e.g. over a Link.
func StartRegistryIn(t testing.TB, ns *Netns, addr string) *Registry {
	t.Helper()
	bin := RequireBinary(t, registryBinary)
	dir := t.TempDir()
	r := &Registry{
		Addr:          addr,
		Dir:           dir,
		ConfigPath:    filepath.Join(dir, "config.yml"),
		LogPath:       filepath.Join(dir, "registry.log"),
		AccessLogPath: filepath.Join(dir, "access.log"),
	}
	if err := os.WriteFile(r.ConfigPath, []byte(r.config()), 0o600); err != nil {
		t.Fatalf("testenv: write registry config: %v", err)
	}
	r.proc = &Process{
		Name:       "docker-registry " + addr,
		Path:       bin,
		Args:       []string{"serve", r.ConfigPath},
		LogPath:    r.LogPath,
		StdoutPath: r.AccessLogPath,
		Netns:      ns,
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("docker-registry log %s (tail):\n%s", r.LogPath, r.proc.Tail(20))
		}
		if err := r.proc.Stop(); err != nil {
			t.Errorf("testenv: %v", err)
		}
	})
	r.Start(t)
	return r
}

// config renders the registry's YAML: JSON logs with the access log on, and
// deletes allowed (the conformance suite cleans up after itself).
func (r *Registry) config() string {
	return fmt.Sprintf(`version: 0.1
log:
  level: info
  formatter: json
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %q
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %q
  headers:
    X-Content-Type-Options: [nosniff]
`, filepath.Join(r.Dir, "data"), r.Addr)
}

// URL is the registry's base URL.
func (r *Registry) URL() string { return "http://" + r.Addr }

// Start starts the stopped registry with the same storage and waits for /v2/.
func (r *Registry) Start(t testing.TB) {
	t.Helper()
	if err := r.proc.Start(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := r.proc.WaitHTTP(r.URL()+"/v2/", readyTimeout); err != nil {
		t.Logf("docker-registry log (tail):\n%s", r.proc.Tail(20))
		_ = r.proc.Stop()
		t.Fatalf("testenv: %v", err)
	}
}

// Stop stops the registry; its storage and logs stay for a later Start.
func (r *Registry) Stop(t testing.TB) {
	t.Helper()
	if err := r.proc.Stop(); err != nil {
		t.Errorf("testenv: %v", err)
	}
}

// Kill stops the registry with SIGKILL: a crash in the middle of whatever
// it was sending. Start brings it back with the same storage.
func (r *Registry) Kill(t testing.TB) {
	t.Helper()
	if err := r.proc.Kill(); err != nil {
		t.Errorf("testenv: %v", err)
	}
}

// Pause freezes the registry (SIGSTOP): connections are accepted and never
// answered, the upstream failure that hangs a pull without a deadline. A
// paused registry is resumed before it is stopped.
func (r *Registry) Pause(t testing.TB) {
	t.Helper()
	if err := r.proc.Pause(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { _ = r.proc.Resume() })
}

// Resume continues a paused registry.
func (r *Registry) Resume(t testing.TB) {
	t.Helper()
	if err := r.proc.Resume(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// Running reports whether the registry is started.
func (r *Registry) Running() bool { return r.proc.Running() }

// Request is one request the registry answered, from its log.
type Request struct {
	Method    string
	Path      string // URL path, without the query
	Query     string // raw query
	UserAgent string
	Status    int
	Bytes     int64 // body bytes written
}

// FromContainerd reports whether containerd itself sent the request.
func (q Request) FromContainerd() bool { return strings.HasPrefix(q.UserAgent, "containerd/") }

// logLine is the part of distribution's "response completed" JSON line we read.
type logLine struct {
	Msg       string `json:"msg"`
	Method    string `json:"http.request.method"`
	URI       string `json:"http.request.uri"`
	UserAgent string `json:"http.request.useragent"`
	Status    int    `json:"http.response.status"`
	Written   int64  `json:"http.response.written"`
}

// Requests returns every request the registry has answered since it was
// first started, in log order. While it runs, a marker request is sent first
// and awaited in the log, so requests answered before the call are there.
func (r *Registry) Requests(t testing.TB) []Request {
	t.Helper()
	marker := ""
	if r.proc.Running() {
		var err error
		if marker, err = r.sendMarker(); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		reqs, sawMarker, err := r.readLog(marker)
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
		if marker == "" || sawMarker {
			return reqs
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: registry log %s did not show marker request %s within 10s", r.LogPath, marker)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *Registry) sendMarker() (string, error) {
	nonce := make([]byte, 8)
	_, _ = rand.Read(nonce)
	marker := hex.EncodeToString(nonce)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL()+"/v2/?marker="+marker, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("User-Agent", markerAgent)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return "", fmt.Errorf("registry marker request: %w", err)
	}
	resp.Body.Close()
	return marker, nil
}

// readLog parses the JSON log; sawMarker tells whether marker's line is in.
func (r *Registry) readLog(marker string) (reqs []Request, sawMarker bool, err error) {
	b, err := os.ReadFile(r.LogPath)
	if err != nil {
		return nil, false, fmt.Errorf("read registry log: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) != nil || !strings.HasPrefix(l.Msg, "response completed") {
			continue
		}
		u, err := url.ParseRequestURI(l.URI)
		if err != nil {
			return nil, false, fmt.Errorf("registry log: request URI %q: %w", l.URI, err)
		}
		if l.UserAgent == markerAgent {
			if marker != "" && u.Query().Get("marker") == marker {
				sawMarker = true
			}
			continue
		}
		reqs = append(reqs, Request{
			Method: l.Method, Path: u.Path, Query: u.RawQuery,
			UserAgent: l.UserAgent, Status: l.Status, Bytes: l.Written,
		})
	}
	if err := sc.Err(); err != nil {
		return nil, false, fmt.Errorf("scan registry log: %w", err)
	}
	return reqs, sawMarker, nil
}

// BlobSends counts the complete GETs of blob dgst of size bytes: how often
// the registry sent the whole blob.
func BlobSends(reqs []Request, dgst digest.Digest, size int64) int {
	n := 0
	for _, q := range reqs {
		if q.Method == http.MethodGet && strings.HasSuffix(q.Path, "/blobs/"+dgst.String()) &&
			q.Status == http.StatusOK && q.Bytes == size {
			n++
		}
	}
	return n
}

// FromContainerd returns the requests containerd itself sent.
func FromContainerd(reqs []Request) []Request {
	var out []Request
	for _, q := range reqs {
		if q.FromContainerd() {
			out = append(out, q)
		}
	}
	return out
}
