package egress

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/registry/oci"
	"github.com/dregistry/dregistry/registry/sourcetest"
	"github.com/dregistry/dregistry/registry/upstream"
)

func testLogger() *slog.Logger {
	if os.Getenv("EGRESS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// upstreamFault is what the test registry does to blob GET bodies.
type upstreamFault int

const (
	faultNone    upstreamFault = iota
	faultCorrupt               // one byte flipped at gateAt
	faultCut                   // the connection is cut at gateAt
)

// testUpstream is go-containerregistry's in-memory registry on loopback,
// counting requests, able to hold a blob body at gateAt until release,
// corrupt it or cut it, or to answer 503 to everything (down).
type testUpstream struct {
	t       testing.TB
	backend http.Handler
	srv     *httptest.Server

	mu       sync.Mutex
	blobGets map[string]int // by digest
	tagReqs  int            // manifest requests by tag
	gate     chan struct{}  // when non-nil, blob bodies wait at gateAt for it to close
	gateAt   int64
	fault    upstreamFault
	down     bool
	auth     []string // Authorization headers seen
	link     *link    // when set, blob bodies share this bandwidth
	sent     int64    // blob body bytes sent
	basic    string   // when set, pulls need this Basic credential (base64 user:pass)
}

// link paces writes of every connection together, like one network link
// of a fixed rate.
type link struct {
	mu          sync.Mutex
	bytesPerSec float64
	free        time.Time // when the link is idle again
}

func (l *link) send(n int) {
	l.mu.Lock()
	start := time.Now()
	if l.free.After(start) {
		start = l.free
	}
	l.free = start.Add(time.Duration(float64(n) / l.bytesPerSec * float64(time.Second)))
	wait := time.Until(l.free)
	l.mu.Unlock()
	time.Sleep(wait)
}

func newTestUpstream(t testing.TB) *testUpstream {
	u := &testUpstream{t: t, blobGets: map[string]int{},
		backend: ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))}
	u.srv = httptest.NewServer(u)
	t.Cleanup(u.srv.Close)
	return u
}

func (u *testUpstream) host() string { return strings.TrimPrefix(u.srv.URL, "http://") }

func (u *testUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	down := u.down
	if a := r.Header.Get("Authorization"); a != "" {
		u.auth = append(u.auth, a)
	}
	var gate chan struct{}
	var gateAt int64
	var fault upstreamFault
	var lnk *link
	isBlobGet := r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:")
	if isBlobGet {
		u.blobGets[r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]]++
		gate, gateAt, fault = u.gate, u.gateAt, u.fault
		lnk = u.link
	}
	if strings.Contains(r.URL.Path, "/manifests/") && !strings.Contains(r.URL.Path, "/manifests/sha256:") &&
		(r.Method == http.MethodGet || r.Method == http.MethodHead) {
		u.tagReqs++
	}
	basic := u.basic
	u.mu.Unlock()
	if down {
		http.Error(w, "down for the test", http.StatusServiceUnavailable)
		return
	}
	if basic != "" && r.Header.Get("Authorization") != "Basic "+basic &&
		(r.Method == http.MethodGet || r.Method == http.MethodHead) {
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		http.Error(w, "credentials needed", http.StatusUnauthorized)
		return
	}
	if isBlobGet {
		w = &faultyWriter{ResponseWriter: w, ctx: r.Context(), gate: gate, at: gateAt, fault: fault, link: lnk, u: u}
	}
	u.backend.ServeHTTP(w, r)
}

// faultyWriter writes a blob body in small flushed chunks and applies the
// fault (or waits for the gate) when the body reaches at.
type faultyWriter struct {
	http.ResponseWriter
	ctx   context.Context
	gate  chan struct{}
	at    int64
	fault upstreamFault
	pos   int64
	link  *link
	u     *testUpstream
}

func (f *faultyWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), 128<<10)
		if f.pos < f.at && f.pos+int64(n) > f.at && (f.gate != nil || f.fault != faultNone) {
			n = int(f.at - f.pos)
		}
		chunk := p[:n]
		if f.pos == f.at && (f.gate != nil || f.fault != faultNone) {
			// The gate first: a test holding the body there has every
			// reader attached before the fault ends the download (a cut
			// that came first let a late reader start a second download).
			if f.gate != nil {
				select {
				case <-f.gate:
				case <-f.ctx.Done():
					return written, f.ctx.Err()
				case <-time.After(time.Minute):
					return written, io.ErrClosedPipe
				}
			}
			switch f.fault {
			case faultCut:
				panic(http.ErrAbortHandler)
			case faultCorrupt:
				chunk = bytes.Clone(chunk)
				chunk[0] ^= 0xff
			}
		}
		if f.link != nil {
			f.link.send(len(chunk))
		}
		m, err := f.ResponseWriter.Write(chunk)
		written += m
		f.pos += int64(m)
		f.u.mu.Lock()
		f.u.sent += int64(m)
		f.u.mu.Unlock()
		if err != nil {
			return written, err
		}
		f.ResponseWriter.(http.Flusher).Flush()
		p = p[n:]
	}
	return written, nil
}

// hold makes the next blob bodies wait at byte at until the returned
// release is called (safe to call twice).
func (u *testUpstream) hold(at int64) (release func()) {
	gate := make(chan struct{})
	u.mu.Lock()
	u.gate, u.gateAt = gate, at
	u.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(gate)
			u.mu.Lock()
			u.gate = nil
			u.mu.Unlock()
		})
	}
}

func (u *testUpstream) setFault(f upstreamFault, at int64) {
	u.mu.Lock()
	u.fault, u.gateAt = f, at
	u.mu.Unlock()
}

func (u *testUpstream) setDown(down bool) {
	u.mu.Lock()
	u.down = down
	u.mu.Unlock()
}

func (u *testUpstream) gets(d digest.Digest) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.blobGets[d.String()]
}

func (u *testUpstream) tagRequests() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.tagReqs
}

// push stores c's blob and manifest (under its tag) in the registry.
func (u *testUpstream) push(c sourcetest.Content) {
	u.t.Helper()
	base := u.srv.URL + "/v2/" + c.Ref.Repository
	u.do(http.MethodPost, base+"/blobs/uploads/?digest="+c.BlobDigest().String(), "application/octet-stream", c.Blob, http.StatusCreated)
	u.do(http.MethodPut, base+"/manifests/"+c.Tag, c.Manifest.MediaType, c.Manifest.Content, http.StatusCreated)
}

func (u *testUpstream) deleteTag(ref oci.Ref, tag string) {
	u.t.Helper()
	u.do(http.MethodDelete, u.srv.URL+"/v2/"+ref.Repository+"/manifests/"+tag, "", nil, http.StatusAccepted)
}

func (u *testUpstream) do(method, url, contentType string, body []byte, want int) {
	u.t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		u.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		u.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		msg, _ := io.ReadAll(resp.Body)
		u.t.Fatalf("%s %s: %s %s", method, url, resp.Status, msg)
	}
}

// source is registry's real upstream client for this registry.
func (u *testUpstream) source() oci.Source {
	up, err := upstream.New(upstream.Config{PlainHTTP: []string{u.host()}, Logger: testLogger()})
	if err != nil {
		u.t.Fatal(err)
	}
	return up
}

// content is an image of one blob of size bytes in the registry's test/app.
func (u *testUpstream) content(size int, seed uint64) sourcetest.Content {
	c := sourcetest.NewContent(oci.Ref{Registry: u.host(), Repository: "test/app"}, "v1", size, seed)
	u.push(c)
	return c
}

// forbiddenUpstream stands for the upstream of a node that must never call
// one: it counts calls and fails them.
type forbiddenUpstream struct {
	mu    sync.Mutex
	calls int
}

func (f *forbiddenUpstream) called() int { f.mu.Lock(); defer f.mu.Unlock(); return f.calls }

func (f *forbiddenUpstream) fail() error {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	return io.ErrClosedPipe
}

func (f *forbiddenUpstream) Name() string { return "forbidden" }
func (f *forbiddenUpstream) Resolve(context.Context, oci.Ref, string) (ocispec.Descriptor, error) {
	return ocispec.Descriptor{}, f.fail()
}
func (f *forbiddenUpstream) Manifest(context.Context, oci.Ref, digest.Digest) (*oci.Manifest, error) {
	return nil, f.fail()
}
func (f *forbiddenUpstream) Blob(context.Context, oci.Ref, digest.Digest) (oci.Blob, error) {
	return nil, f.fail()
}

// cluster is a membership view the test sets; every loopback address is a
// member unless members is false.
type cluster struct {
	mu       sync.Mutex
	list     []Member
	outsider bool // IsMember answers false
}

func (c *cluster) Members() []Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Member(nil), c.list...)
}

func (c *cluster) IsMember(ip netip.Addr) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return ip.IsLoopback() && !c.outsider
}

func (c *cluster) set(list ...Member) {
	c.mu.Lock()
	c.list = list
	c.mu.Unlock()
}

// completion records OnComplete calls.
type completion struct {
	mu    sync.Mutex
	calls []completed
}

type completed struct {
	dgst digest.Digest
	path string
	size int64
	data []byte // the file's content at the time of the call
}

func (c *completion) record(d digest.Digest, path string, size int64) {
	data, _ := os.ReadFile(path)
	c.mu.Lock()
	c.calls = append(c.calls, completed{d, path, size, data})
	c.mu.Unlock()
}

func (c *completion) list() []completed {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]completed(nil), c.calls...)
}

// node is one in-process dregistry node's egress: Fetcher, Source and its
// peer endpoint on loopback.
type node struct {
	name    string
	fetcher *Fetcher
	source  *Source
	srv     *httptest.Server
	done    *completion
	dir     string

	mu       sync.Mutex
	peerAuth []string // Authorization of every peer request received
	peerReqs []string // "METHOD path" of every peer request received
}

// requests counts the peer requests received with this method and path
// prefix.
func (n *node) requests(method, prefix string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	count := 0
	for _, r := range n.peerReqs {
		if strings.HasPrefix(r, method+" "+prefix) {
			count++
		}
	}
	return count
}

// rangeNote is how a request's Range shows in peerReqs.
func rangeNote(r *http.Request) string {
	if v := r.Header.Get("Range"); v != "" {
		return " range=" + v
	}
	return ""
}

// blobRanges lists the Range of every blob GET received ("" for none).
func (n *node) blobRanges() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, r := range n.peerReqs {
		if rest, ok := strings.CutPrefix(r, "GET "+blobsPath); ok {
			_, rng, _ := strings.Cut(rest, " range=")
			out = append(out, rng)
		}
	}
	return out
}

func (n *node) authSeen() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.peerAuth...)
}

func (n *node) member(egress bool) Member {
	return Member{Name: n.name, HTTPAddr: strings.TrimPrefix(n.srv.URL, "http://"), Egress: egress}
}

func newNode(t testing.TB, name string, egress bool, up oci.Source, c Cluster, tweak func(*FetcherConfig)) *node {
	t.Helper()
	return newNodeWith(t, name, egress, up, c, tweak, nil)
}

// newNodeWith is newNode with the Source's configuration tweaked too.
func newNodeWith(t testing.TB, name string, egress bool, up oci.Source, c Cluster, tweak func(*FetcherConfig), tweakSource func(*SourceConfig)) *node {
	t.Helper()
	n := &node{name: name, done: &completion{}, dir: t.TempDir()}
	fcfg := DefaultFetcherConfig()
	fcfg.Upstream, fcfg.SpoolDir, fcfg.OnComplete = up, n.dir, n.done.record
	fcfg.StallTimeout, fcfg.LookupTimeout, fcfg.Logger = time.Minute, 20*time.Second, testLogger()
	if tweak != nil {
		tweak(&fcfg)
	}
	f, err := NewFetcher(fcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("close fetcher: %v", err)
		}
	})
	n.fetcher = f
	scfg := SourceConfig{Self: name, Egress: egress, Cluster: c, Fetcher: f, Logger: testLogger()}
	if m, ok := c.(interface{ IsMember(netip.Addr) bool }); ok {
		// Keyless: members are admitted by address, as the daemon does.
		scfg.Gate = &peerauth.Gate{Member: m.IsMember}
	}
	if tweakSource != nil {
		tweakSource(&scfg)
	}
	if n.source, err = NewSource(scfg); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(PeerPathPrefix, n.source.PeerHandler())
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.mu.Lock()
		n.peerAuth = append(n.peerAuth, r.Header.Get("Authorization"))
		n.peerReqs = append(n.peerReqs, r.Method+" "+r.URL.Path+rangeNote(r))
		n.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(n.srv.Close)
	return n
}

// spoolFiles lists what the node's spool directory holds.
func (n *node) spoolFiles(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(n.dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func readAllAt(ctx context.Context, b oci.Blob, offset int64) ([]byte, error) {
	rc, err := b.Open(ctx, offset)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}
