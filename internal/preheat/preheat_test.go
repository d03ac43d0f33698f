package preheat

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/internal/peerauth"
)

const testTimeout = 10 * time.Second

var manifestDigest = digest.FromString("manifest")

func goodRequest() Request {
	return Request{Image: "docker.io/library/busybox:1.36", Digest: manifestDigest,
		MediaType: ocispec.MediaTypeImageManifest, Size: 512, Namespace: "k8s.io"}
}

func asJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseRequestRefusesBadInput(t *testing.T) {
	with := func(f func(*Request)) string {
		r := goodRequest()
		f(&r)
		return asJSON(t, r)
	}
	for _, tc := range []struct{ name, body, want string }{
		{"empty image", with(func(r *Request) { r.Image = "" }), "image reference is empty"},
		{"upper case repository", with(func(r *Request) { r.Image = "docker.io/library/BusyBox:1" }), "image reference"},
		{"space in the name", with(func(r *Request) { r.Image = "docker.io/a b:1" }), "image reference"},
		{"bad tag", with(func(r *Request) { r.Image = "docker.io/library/busybox:-x" }), "image reference"},
		{"not normalized", with(func(r *Request) { r.Image = "busybox" }), "not normalized"},
		{"bad digest", with(func(r *Request) { r.Digest = "sha256:123" }), "digest"},
		{"no digest", with(func(r *Request) { r.Digest = "" }), "digest"},
		{"layer media type", with(func(r *Request) { r.MediaType = ocispec.MediaTypeImageLayerGzip }), "not an index or image manifest"},
		{"size 0", with(func(r *Request) { r.Size = 0 }), "size 0"},
		{"size too large", with(func(r *Request) { r.Size = 5 << 20 }), "size"},
		{"empty namespace", with(func(r *Request) { r.Namespace = "" }), "containerd namespace"},
		{"namespace with a slash", with(func(r *Request) { r.Namespace = "k8s.io/x" }), "containerd namespace"},
		{"namespace starting with a dot", with(func(r *Request) { r.Namespace = ".hidden" }), "containerd namespace"},
		{"unknown field", `{"image":"docker.io/library/busybox:1","extra":1}`, "unknown field"},
		{"two objects", with(func(*Request) {}) + with(func(*Request) {}), "more than one"},
		{"not JSON", `image=busybox`, "request body"},
		{"too large", `{"image":"` + strings.Repeat("a", maxBody) + `"}`, "larger than"},
	} {
		_, err := parseRequest(strings.NewReader(tc.body))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	if _, err := parseRequest(strings.NewReader(asJSON(t, goodRequest()))); err != nil {
		t.Errorf("a good request: %v", err)
	}
}

func TestParseOrderNormalizesAndRefuses(t *testing.T) {
	o, err := ParseOrder(strings.NewReader(`{"ref":"busybox"}`))
	if err != nil {
		t.Fatal(err)
	}
	if o.Ref != "docker.io/library/busybox:latest" || o.Namespace != DefaultNamespace || o.Nodes != 0 {
		t.Errorf("order %+v, want docker.io/library/busybox:latest in k8s.io on every node", o)
	}
	for _, tc := range []struct{ name, body, want string }{
		{"no ref", `{}`, "empty"},
		{"bad ref", `{"ref":"Busybox"}`, "image reference"},
		{"bad namespace", `{"ref":"busybox","namespace":"a/b"}`, "containerd namespace"},
		{"negative nodes", `{"ref":"busybox","nodes":-1}`, "nodes"},
	} {
		if _, err := ParseOrder(strings.NewReader(tc.body)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	for _, s := range []string{"0", "-2", "x", ""} {
		if _, err := ParseNodes(s); err == nil {
			t.Errorf("--nodes %q accepted", s)
		}
	}
	if n, err := ParseNodes("all"); n != 0 || err != nil {
		t.Errorf("--nodes all: %d, %v", n, err)
	}
}

// fakeFetch records calls and finishes each when released.
type fakeFetch struct {
	calls   atomic.Int32
	release chan struct{}
	err     error
}

func newFakeFetch() *fakeFetch { return &fakeFetch{release: make(chan struct{})} }

func (f *fakeFetch) fetch(ctx context.Context, req Request, progress func(done, total int64)) error {
	f.calls.Add(1)
	progress(req.Size, req.Size+1000)
	select {
	case <-f.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	if f.err != nil {
		return f.err
	}
	progress(req.Size+1000, req.Size+1000)
	return nil
}

func newRunner(t *testing.T, node string, f *fakeFetch) *Runner {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r, err := NewRunner(ctx, RunnerConfig{Node: node, Fetch: f.fetch, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// waitRunning polls r.Running until ok, within testTimeout.
func waitRunning(t *testing.T, r *Runner, ok func([]Status) bool) []Status {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		got := r.Running()
		if ok(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("running preheats: %+v", got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitFinished(t *testing.T, j *Job) {
	t.Helper()
	select {
	case <-j.Finished():
	case <-time.After(testTimeout):
		t.Fatal("preheat did not finish")
	}
}

func TestStartJoinsTheRunningPreheatOfTheSameImage(t *testing.T) {
	f := newFakeFetch()
	r := newRunner(t, "n1", f)
	req := goodRequest()
	j1, joined1 := r.Start(req)
	j2, joined2 := r.Start(req)
	if joined1 || !joined2 || j1 != j2 {
		t.Fatalf("second Start: joined %v (first %v), same job %v; want it to join the first", joined2, joined1, j1 == j2)
	}
	other := req
	other.Namespace = "default"
	j3, joined3 := r.Start(other)
	if joined3 || j3 == j1 {
		t.Fatal("a preheat into another namespace joined the first")
	}
	got := waitRunning(t, r, func(got []Status) bool {
		return len(got) == 2 && got[0].DoneBytes == req.Size && got[1].DoneBytes == req.Size
	})
	if got[0].Namespace != "default" || got[1].Namespace != "k8s.io" || got[0].TotalBytes != req.Size+1000 {
		t.Errorf("Running: %+v, want both by namespace, with progress", got)
	}
	close(f.release)
	waitFinished(t, j1)
	waitFinished(t, j3)
	if n := f.calls.Load(); n != 2 {
		t.Errorf("fetch ran %d times, want 2 (once per namespace)", n)
	}
	if s := j2.Status("n1"); s.State != StateDone || s.DoneBytes != s.TotalBytes {
		t.Errorf("joined job: %+v, want done", s)
	}
	if got := r.Running(); len(got) != 0 {
		t.Errorf("Running after the end: %+v", got)
	}
	// A finished preheat is not joined: asking again fetches again (and
	// finds the content present).
	j4, joined4 := r.Start(req)
	if joined4 || j4 == j1 {
		t.Error("a request after the end joined the finished preheat")
	}
	waitFinished(t, j4)
}

func testKeys(t *testing.T) *peerauth.Keys {
	t.Helper()
	k, err := peerauth.New([][]byte{bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func signed(k *peerauth.Keys, node string) *http.Client {
	return &http.Client{Timeout: testTimeout, Transport: &peerauth.Transport{Base: &http.Transport{}, Keys: k, Node: node}}
}

func post(t *testing.T, client *http.Client, url, body string) (int, []string) {
	t.Helper()
	resp, err := client.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return resp.StatusCode, lines
}

func lastStatus(t *testing.T, lines []string) Status {
	t.Helper()
	if len(lines) == 0 {
		t.Fatal("no status line")
	}
	var s Status
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPeerEndpointDeduplicatesConcurrentRequests: a member asking for an
// image whose preheat runs joins it: one fetch, and both read its end.
func TestPeerEndpointDeduplicatesConcurrentRequests(t *testing.T) {
	k := testKeys(t)
	f := newFakeFetch()
	r := newRunner(t, "n2", f)
	srv := httptest.NewServer(r.PeerHandler(&peerauth.Gate{Keys: k}))
	t.Cleanup(srv.Close)

	var streams []*bufio.Scanner
	for i := range 2 {
		resp, err := signed(k, "n1").Post(srv.URL+PeerPath, "application/json", strings.NewReader(asJSON(t, goodRequest())))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %s", i, resp.Status)
		}
		sc := bufio.NewScanner(resp.Body)
		// The first line is sent once the request started or joined
		// the preheat, which the fetch still holds.
		if !sc.Scan() {
			t.Fatalf("request %d: no status line: %v", i, sc.Err())
		}
		streams = append(streams, sc)
	}
	close(f.release)
	for i, sc := range streams {
		var lines []string
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		if s := lastStatus(t, lines); s.State != StateDone || s.Node != "n2" || s.Digest != manifestDigest.String() {
			t.Errorf("request %d ended with %+v, want done on n2", i, s)
		}
	}
	if n := f.calls.Load(); n != 1 {
		t.Errorf("fetch ran %d times for two requests of a running preheat, want once", n)
	}
}

// TestPeerEndpointRefusesOutsidersAndBadRequests: no token (even from this
// host) gets 403, a bad request 400; neither starts a preheat.
func TestPeerEndpointRefusesOutsidersAndBadRequests(t *testing.T) {
	k := testKeys(t)
	f := newFakeFetch()
	r := newRunner(t, "n2", f)
	srv := httptest.NewServer(r.PeerHandler(&peerauth.Gate{Keys: k}))
	t.Cleanup(srv.Close)
	plain := &http.Client{Timeout: testTimeout}
	other, err := peerauth.New([][]byte{bytes.Repeat([]byte{8}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	bad := goodRequest()
	bad.Namespace = "../k8s.io"
	for _, tc := range []struct {
		name   string
		client *http.Client
		body   string
		want   int
	}{
		{"no token, from this host", plain, asJSON(t, goodRequest()), http.StatusForbidden},
		{"another cluster's key", signed(other, "n1"), asJSON(t, goodRequest()), http.StatusForbidden},
		{"bad namespace", signed(k, "n1"), asJSON(t, bad), http.StatusBadRequest},
		{"not JSON", signed(k, "n1"), "busybox", http.StatusBadRequest},
	} {
		code, lines := post(t, tc.client, srv.URL+PeerPath, tc.body)
		if code != tc.want {
			t.Errorf("%s: %d %v, want %d", tc.name, code, lines, tc.want)
		}
		if len(lines) != 1 || !strings.Contains(lines[0], `"error"`) {
			t.Errorf("%s: answer %v, want one JSON error", tc.name, lines)
		}
	}
	if n := f.calls.Load(); n != 0 || len(r.Running()) != 0 {
		t.Errorf("refused requests started %d fetches, running %v", n, r.Running())
	}
}

// cluster is a coordinator on n1 and a member n2 behind its peer endpoint.
type cluster struct {
	keys      *peerauth.Keys
	f1, f2    *fakeFetch
	r1, r2    *Runner
	admin     *httptest.Server
	resolved  atomic.Int32
	resolveTo error
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{keys: testKeys(t), f1: newFakeFetch(), f2: newFakeFetch()}
	c.r1, c.r2 = newRunner(t, "n1", c.f1), newRunner(t, "n2", c.f2)
	gate := &peerauth.Gate{Keys: c.keys}
	peer := httptest.NewServer(c.r2.PeerHandler(gate))
	t.Cleanup(peer.Close)
	coord, err := NewCoordinator(CoordinatorConfig{
		Self: "n1",
		Members: func() []Member {
			return []Member{{Name: "n0-gone", HTTPAddr: "127.0.0.1:1"}, {Name: "n1", HTTPAddr: "unused"}, {Name: "n2", HTTPAddr: strings.TrimPrefix(peer.URL, "http://")}}
		},
		Runner: c.r1,
		Resolve: func(context.Context, string) (ocispec.Descriptor, error) {
			c.resolved.Add(1)
			return goodRequest().Target(), c.resolveTo
		},
		Client: signed(c.keys, "n1"),
		Gate:   gate,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	c.admin = httptest.NewServer(coord.Handler())
	t.Cleanup(c.admin.Close)
	return c
}

func events(t *testing.T, lines []string) (Event, map[string]Status) {
	t.Helper()
	final := map[string]Status{}
	var first Event
	for i, l := range lines {
		var e Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if i == 0 {
			first = e
			continue
		}
		if e.Status == nil {
			t.Fatalf("line %d without a status: %q", i, l)
		}
		final[e.Status.Node] = *e.Status
	}
	return first, final
}

// TestCoordinatorReportsEveryNodeAndWhyOneFailed: this node first, then
// the others by name; the member that cannot be reached is reported
// failed with the reason, the others done.
func TestCoordinatorReportsEveryNodeAndWhyOneFailed(t *testing.T) {
	c := newCluster(t)
	close(c.f1.release)
	close(c.f2.release)
	code, lines := post(t, &http.Client{Timeout: testTimeout}, c.admin.URL+AdminPath, `{"ref":"busybox:1.36"}`)
	if code != http.StatusOK {
		t.Fatalf("%d %v", code, lines)
	}
	first, final := events(t, lines)
	if first.Image != "docker.io/library/busybox:1.36" || first.Digest != manifestDigest.String() ||
		strings.Join(first.Nodes, ",") != "n1,n0-gone,n2" {
		t.Errorf("first line %+v, want the resolved image and n1,n0-gone,n2", first)
	}
	for _, n := range []string{"n1", "n2"} {
		if s := final[n]; s.State != StateDone || s.Namespace != "k8s.io" {
			t.Errorf("%s: %+v, want done in k8s.io", n, s)
		}
	}
	if s := final["n0-gone"]; s.State != StateFailed || !strings.Contains(s.Error, "127.0.0.1:1") {
		t.Errorf("n0-gone: %+v, want failed naming its address", s)
	}
	// --nodes 1 asks this node only.
	code, lines = post(t, &http.Client{Timeout: testTimeout}, c.admin.URL+AdminPath, `{"ref":"busybox:1.36","nodes":1}`)
	if first, final = events(t, lines); code != http.StatusOK || len(first.Nodes) != 1 || final["n1"].State != StateDone {
		t.Errorf("--nodes 1: %d %v", code, lines)
	}
}

// TestCoordinatorRefusesBeforeAskingAnyone: outsiders get 403, a bad
// order 400, an image that does not resolve its error; no member is
// asked and nothing is resolved for a refused order.
func TestCoordinatorRefusesBeforeAskingAnyone(t *testing.T) {
	c := newCluster(t)
	plain := &http.Client{Timeout: testTimeout}
	for _, tc := range []struct {
		name, body string
		want       int
	}{
		{"bad reference", `{"ref":"UPPER:1"}`, http.StatusBadRequest},
		{"bad namespace", `{"ref":"busybox","namespace":"a b"}`, http.StatusBadRequest},
		{"more nodes than members", `{"ref":"busybox","nodes":4}`, http.StatusBadRequest},
	} {
		code, lines := post(t, plain, c.admin.URL+AdminPath, tc.body)
		if code != tc.want || len(lines) != 1 || !strings.Contains(lines[0], `"error"`) {
			t.Errorf("%s: %d %v, want %d with an error", tc.name, code, lines, tc.want)
		}
	}
	if n := c.resolved.Load(); n != 0 {
		t.Errorf("refused orders resolved %d times", n)
	}
	c.resolveTo = errors.New("upstream says no")
	if code, lines := post(t, plain, c.admin.URL+AdminPath, `{"ref":"busybox"}`); code != http.StatusBadGateway || !strings.Contains(strings.Join(lines, ""), "upstream says no") {
		t.Errorf("unresolvable image: %d %v", code, lines)
	}
	if n := c.f1.calls.Load() + c.f2.calls.Load(); n != 0 {
		t.Errorf("refused orders started %d fetches", n)
	}
}

// TestAdminEndpointAdmitsThisHostAndMembersOnly: as every /admin/v1/ path,
// an unsigned request from another address gets 403 and starts nothing.
func TestAdminEndpointAdmitsThisHostAndMembersOnly(t *testing.T) {
	c := newCluster(t)
	h := c.admin.Config.Handler
	for _, tc := range []struct {
		name, remote string
		sign         bool
		want         int
	}{
		{"unsigned from elsewhere", "198.18.0.9:4000", false, http.StatusForbidden},
		{"signed from elsewhere, bad order", "198.18.0.9:4000", true, http.StatusBadRequest},
		{"this host, bad order", "127.0.0.1:4000", false, http.StatusBadRequest},
	} {
		req := httptest.NewRequest(http.MethodPost, "http://10.0.0.3:5000"+AdminPath, strings.NewReader(`{"ref":""}`))
		req.RemoteAddr = tc.remote
		if tc.sign {
			req.Header.Set(peerauth.Header, c.keys.Sign("n2", req.Method, req.Host, req.RequestURI, time.Now()))
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		body, _ := io.ReadAll(rec.Body)
		if rec.Code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, rec.Code, body, tc.want)
		}
	}
	if c.resolved.Load() != 0 || c.f1.calls.Load()+c.f2.calls.Load() != 0 {
		t.Error("a refused request resolved or fetched")
	}
}

// deadlineRecorder is a response writer that records the write deadlines
// a handler sets on it (http.ResponseController finds the method).
type deadlineRecorder struct {
	*httptest.ResponseRecorder
	mu        sync.Mutex
	deadlines []time.Time
}

func (d *deadlineRecorder) SetWriteDeadline(t time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.deadlines = append(d.deadlines, t)
	return nil
}

type captureTransport struct{ req *http.Request }

func (c *captureTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.req = r
	return nil, errors.New("captured")
}

// TestStreamsAreBoundedByAWriteDeadline: both streaming endpoints arm a
// write deadline of at most StallTimeout before they write, so a caller
// that stops reading cannot pin the handler once its socket buffer is
// full, and clear it when the stream ends (keep-alive).
func TestStreamsAreBoundedByAWriteDeadline(t *testing.T) {
	k := testKeys(t)
	f := newFakeFetch()
	close(f.release)
	r := newRunner(t, "n2", f)
	capture := &captureTransport{}
	client := &http.Client{Transport: &peerauth.Transport{Base: capture, Keys: k, Node: "n1"}}
	if _, err := client.Post("http://example.com"+PeerPath, "application/json", strings.NewReader(asJSON(t, goodRequest()))); err == nil {
		t.Fatal("the capturing transport sent a request")
	}
	req := httptest.NewRequest(http.MethodPost, PeerPath, strings.NewReader(asJSON(t, goodRequest())))
	req.Header = capture.req.Header.Clone()
	rec := &deadlineRecorder{ResponseRecorder: httptest.NewRecorder()}
	start := time.Now()
	r.PeerHandler(&peerauth.Gate{Keys: k}).ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("preheat stream: %d %s", rec.Code, rec.Body)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.deadlines) < 2 {
		t.Fatalf("deadlines set: %v, want one per write and a clear at the end", rec.deadlines)
	}
	for _, d := range rec.deadlines[:len(rec.deadlines)-1] {
		if d.IsZero() || d.Sub(start) > StallTimeout+time.Second {
			t.Errorf("write deadline %v after the start, want within %v", d.Sub(start), StallTimeout)
		}
	}
	if last := rec.deadlines[len(rec.deadlines)-1]; !last.IsZero() {
		t.Errorf("the deadline was left at %v after the stream ended, want cleared", last)
	}
}
