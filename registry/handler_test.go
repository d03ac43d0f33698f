package registry

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/registry/oci"
)

// served is one Observer report.
type served struct {
	route, source string
	status        int
	bytes         int64
	ttfb, total   time.Duration
}

type recordingObserver struct {
	mu   sync.Mutex
	seen []served
}

func (o *recordingObserver) Served(route, source string, status int, n int64, ttfb, total time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seen = append(o.seen, served{route, source, status, n, ttfb, total})
}

func (o *recordingObserver) last() served {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.seen) == 0 {
		return served{}
	}
	return o.seen[len(o.seen)-1]
}

// wait returns the n-th report, polling until it came (bounded).
func (o *recordingObserver) wait(t *testing.T, n int) served {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		o.mu.Lock()
		if len(o.seen) >= n {
			defer o.mu.Unlock()
			return o.seen[n-1]
		}
		o.mu.Unlock()
	}
	t.Fatalf("observer got fewer than %d reports in 10s", n)
	return served{}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// doRequest sends one request with its own deadline, so no test can hang.
func doRequest(t *testing.T, method, url string, header http.Header) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	return send(&http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableCompression: true}}, req)
}

// send makes req with client and reads the whole body.
func send(client *http.Client, req *http.Request) (*http.Response, []byte, error) {
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func ociCode(t *testing.T, body []byte) string {
	t.Helper()
	var e ociErrors
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 {
		t.Fatalf("body %q is not one OCI error: %v", body, err)
	}
	return e.Errors[0].Code
}

// fixture is a handler over two in-process sources, with content in both.
type fixture struct {
	local, upstream *fakeSource
	obs             *recordingObserver
	srv             *httptest.Server
	ref             oci.Ref
	index           ocispec.Descriptor // tag "v1" upstream; content local
	indexBody       []byte
	onlyUp          ocispec.Descriptor // manifest only upstream, tag "up"
	blob            []byte
	blobDigest      digest.Digest
}

func newFixture(t *testing.T, configure func(f *fixture, cfg *Config)) *fixture {
	f := &fixture{local: newFakeSource("containerd"), upstream: newFakeSource("upstream"), obs: &recordingObserver{}}
	f.ref = oci.Ref{Registry: "docker.io", Repository: "library/alpine"}
	f.indexBody = []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)
	f.index = f.local.addManifest(f.ref, ocispec.MediaTypeImageIndex, f.indexBody)
	f.upstream.tags[f.ref.String()+":v1"] = f.index
	f.onlyUp = f.upstream.addManifest(f.ref, ocispec.MediaTypeImageManifest, []byte(`{"schemaVersion":2,"config":{},"layers":[]}`))
	f.upstream.tags[f.ref.String()+":up"] = f.onlyUp
	f.blob = randomBytes(1<<20+17, 1)
	f.blobDigest = f.local.addBlob(f.ref, f.blob)
	cfg := Config{
		Sources:       []oci.Source{f.local, f.upstream},
		TagSources:    []oci.Source{f.upstream, f.local},
		LookupTimeout: 5 * time.Second,
		StallTimeout:  30 * time.Second,
		Logger:        testLogger(t),
		Observer:      f.obs,
	}
	if configure != nil {
		configure(f, &cfg)
	}
	f.srv = httptest.NewServer(NewHandler(cfg))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) url(path string) string { return f.srv.URL + path }

func TestHandlerBaseAndBadInput(t *testing.T) {
	f := newFixture(t, nil)
	okDigest := "sha256:" + sha256Hex
	for _, tc := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"POST", "/v2/library/alpine/blobs/uploads/", 405, codeUnsupported},
		{"PUT", "/v2/library/alpine/manifests/v1", 405, codeUnsupported},
		{"DELETE", "/v2/library/alpine/blobs/" + okDigest, 405, codeUnsupported},
		{"PATCH", "/v2/library/alpine/blobs/uploads/x", 405, codeUnsupported},
		{"GET", "/v2/library/alpine/tags/list", 404, codeNameUnknown},
		{"GET", "/v2/_catalog", 404, codeNameUnknown},
		{"GET", "/v2/library/alpine/blobs/uploads/x", 404, codeNameUnknown},
		{"GET", "/v2/Library/alpine/manifests/v1", 400, codeNameInvalid},
		{"GET", "/v2/library//alpine/manifests/v1", 400, codeNameInvalid},
		{"GET", "/v2/library/alpine/manifests/v1?ns=bad_host", 400, codeNameInvalid},
		{"GET", "/v2/library/alpine/manifests/v1?ns=a.io:99999", 400, codeNameInvalid},
		{"GET", "/v2/library/alpine/manifests/.bad", 400, codeManifestInvalid},
		{"GET", "/v2/library/alpine/manifests/" + strings.Repeat("t", 129), 400, codeManifestInvalid},
		{"GET", "/v2/library/alpine/manifests/sha256:abc", 400, codeDigestInvalid},
		{"GET", "/v2/library/alpine/manifests/md5:d41d8cd98f00b204e9800998ecf8427e", 400, codeDigestInvalid},
		{"GET", "/v2/library/alpine/blobs/sha256:" + strings.ToUpper(sha256Hex), 400, codeDigestInvalid},
		{"GET", "/v2/library/alpine/blobs/latest", 400, codeDigestInvalid},
		{"HEAD", "/v2/library/alpine/blobs/sha256:zz", 400, ""},
		{"GET", "/v2/library/alpine/manifests/nosuchtag", 404, codeManifestUnknown},
		{"GET", "/v2/library/alpine/manifests/" + okDigest, 404, codeManifestUnknown},
		{"GET", "/v2/library/alpine/blobs/" + okDigest, 404, codeBlobUnknown},
		{"GET", "/v2/library/alpine/manifests/v1?ns=ghcr.io", 404, codeManifestUnknown},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			resp, body, err := doRequest(t, tc.method, f.url(tc.path), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (body %s)", resp.StatusCode, tc.status, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if tc.code != "" {
				if code := ociCode(t, body); code != tc.code {
					t.Errorf("code %s, want %s", code, tc.code)
				}
			}
			// Every bad input leaves the handler serving.
			resp, body, err = doRequest(t, "GET", f.url("/v2/"), nil)
			if err != nil || resp.StatusCode != 200 || string(body) != "{}" ||
				resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
				t.Fatalf("GET /v2/ after bad input: %v %v %q", err, resp, body)
			}
		})
	}
	if n := f.local.blobCalls.Load() + f.local.manifestCalls.Load(); n != 2 {
		// Of digest lookups, only the two well-formed unknown ones reach a source.
		t.Errorf("sources were asked %d times, want 2", n)
	}
}

func TestHandlerManifests(t *testing.T) {
	f := newFixture(t, nil)
	type want struct {
		status int
		desc   ocispec.Descriptor
		body   []byte
		source string
	}
	onlyUpBody := f.upstream.manifests[f.ref.String()+"@"+f.onlyUp.Digest.String()].Content
	for _, tc := range []struct {
		name, method, path string
		want               want
	}{
		{"GET by tag, content local", "GET", "/v2/library/alpine/manifests/v1", want{200, f.index, f.indexBody, "containerd"}},
		{"GET by tag with ns", "GET", "/v2/library/alpine/manifests/v1?ns=docker.io", want{200, f.index, f.indexBody, "containerd"}},
		{"HEAD by tag, from the descriptor", "HEAD", "/v2/library/alpine/manifests/v1", want{200, f.index, nil, "upstream"}},
		{"GET by digest", "GET", "/v2/library/alpine/manifests/" + f.index.Digest.String(), want{200, f.index, f.indexBody, "containerd"}},
		{"HEAD by digest", "HEAD", "/v2/library/alpine/manifests/" + f.index.Digest.String(), want{200, f.index, nil, "containerd"}},
		{"GET by tag, content upstream", "GET", "/v2/library/alpine/manifests/up", want{200, f.onlyUp, onlyUpBody, "upstream"}},
		{"GET by digest, upstream", "GET", "/v2/library/alpine/manifests/" + f.onlyUp.Digest.String(), want{200, f.onlyUp, onlyUpBody, "upstream"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, err := doRequest(t, tc.method, f.url(tc.path), http.Header{"Accept": {oci.ManifestAccept}})
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.want.status {
				t.Fatalf("status %d (%s)", resp.StatusCode, body)
			}
			h := resp.Header
			if h.Get("Content-Type") != tc.want.desc.MediaType ||
				h.Get("Content-Length") != strconv.FormatInt(tc.want.desc.Size, 10) ||
				h.Get("Docker-Content-Digest") != tc.want.desc.Digest.String() {
				t.Errorf("headers %v, want %+v", h, tc.want.desc)
			}
			if !bytes.Equal(body, tc.want.body) {
				t.Errorf("body %q, want %q", body, tc.want.body)
			}
			if got := f.obs.last(); got.source != tc.want.source || got.route != routeManifest || got.status != tc.want.status {
				t.Errorf("observed %+v, want source %s", got, tc.want.source)
			}
		})
	}
}

func TestHandlerHeadByTagWithoutMediaTypeFetchesBody(t *testing.T) {
	f := newFixture(t, nil)
	d := f.index
	d.MediaType = ""
	f.upstream.tags[f.ref.String()+":bare"] = d
	resp, body, err := doRequest(t, "HEAD", f.url("/v2/library/alpine/manifests/bare"), nil)
	if err != nil || resp.StatusCode != 200 || len(body) != 0 {
		t.Fatalf("HEAD: %v %v %q", err, resp, body)
	}
	if resp.Header.Get("Content-Type") != ocispec.MediaTypeImageIndex || resp.Header.Get("Content-Length") != strconv.Itoa(len(f.indexBody)) {
		t.Errorf("headers %v", resp.Header)
	}
	if f.local.manifestCalls.Load() != 1 {
		t.Errorf("manifest fetched %d times, want 1", f.local.manifestCalls.Load())
	}
}

func TestHandlerSourceFallback(t *testing.T) {
	for _, tc := range []struct {
		name      string
		breakSrc  func(f *fixture)
		wantCode  int
		wantSrc   string
		wantBytes bool
	}{
		{"upstream errors, tag from containerd", func(f *fixture) { f.upstream.lookupErr = errors.New("connection refused") }, 200, "containerd", true},
		{"upstream hangs, tag from containerd", func(f *fixture) { f.upstream.blockLookups = true }, 200, "containerd", true},
		{"containerd lies, manifest from upstream", func(f *fixture) {
			m := f.local.manifests[f.ref.String()+"@"+f.index.Digest.String()]
			m.Content = append([]byte(" "), m.Content...)
			f.upstream.addManifest(f.ref, ocispec.MediaTypeImageIndex, f.indexBody)
		}, 200, "upstream", true},
		{"everything hangs", func(f *fixture) { f.upstream.blockLookups = true; f.local.blockLookups = true }, 404, "", false},
		{"containerd lacks the tag, upstream down", func(f *fixture) {
			f.upstream.lookupErr = errors.New("down")
			delete(f.local.manifests, f.ref.String()+"@"+f.index.Digest.String())
		}, 404, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(f *fixture, cfg *Config) { cfg.LookupTimeout = 500 * time.Millisecond })
			f.local.tags[f.ref.String()+":v1"] = f.index
			tc.breakSrc(f)
			resp, body, err := doRequest(t, "GET", f.url("/v2/library/alpine/manifests/v1"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantCode, body)
			}
			if tc.wantBytes && !bytes.Equal(body, f.indexBody) {
				t.Fatalf("body %q", body)
			}
			if tc.wantSrc != "" && f.obs.last().source != tc.wantSrc {
				t.Errorf("source %q, want %q", f.obs.last().source, tc.wantSrc)
			}
		})
	}
}

func TestHandlerBlobs(t *testing.T) {
	for _, mode := range []string{"stream", "seekable", "spans"} {
		t.Run(mode, func(t *testing.T) {
			f := newFixture(t, func(f *fixture, _ *Config) { f.local.seekable, f.local.spans = mode == "seekable", mode == "spans" })
			size := int64(len(f.blob))
			path := "/v2/library/alpine/blobs/" + f.blobDigest.String()
			for _, tc := range []struct {
				method, rng  string
				status       int
				start, end   int64 // body is blob[start:end]
				contentRange string
			}{
				{"GET", "", 200, 0, size, ""},
				{"HEAD", "", 200, 0, 0, ""},
				{"GET", "bytes=0-9", 206, 0, 10, fmt.Sprintf("bytes 0-9/%d", size)},
				{"GET", "bytes=1000-", 206, 1000, size, fmt.Sprintf("bytes 1000-%d/%d", size-1, size)},
				{"GET", "bytes=-100", 206, size - 100, size, fmt.Sprintf("bytes %d-%d/%d", size-100, size-1, size)},
				{"GET", "bytes=5-9999999999", 206, 5, size, fmt.Sprintf("bytes 5-%d/%d", size-1, size)},
				{"GET", fmt.Sprintf("bytes=%d-", size), 416, 0, 0, fmt.Sprintf("bytes */%d", size)},
				{"HEAD", fmt.Sprintf("bytes=%d-", size+10), 416, 0, 0, fmt.Sprintf("bytes */%d", size)},
				{"GET", "bytes=-0", 416, 0, 0, fmt.Sprintf("bytes */%d", size)},
				{"GET", "bytes=x-y", 200, 0, size, ""},
				{"GET", "bytes=9-5", 200, 0, size, ""},
			} {
				t.Run(tc.method+" "+tc.rng, func(t *testing.T) {
					h := http.Header{}
					if tc.rng != "" {
						h.Set("Range", tc.rng)
					}
					resp, body, err := doRequest(t, tc.method, f.url(path), h)
					if err != nil {
						t.Fatal(err)
					}
					if resp.StatusCode != tc.status {
						t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
					}
					hd := resp.Header
					if hd.Get("Docker-Content-Digest") != f.blobDigest.String() || hd.Get("Accept-Ranges") != "bytes" {
						t.Errorf("headers %v", hd)
					}
					if hd.Get("Content-Range") != tc.contentRange {
						t.Errorf("Content-Range %q, want %q", hd.Get("Content-Range"), tc.contentRange)
					}
					wantLen := tc.end - tc.start
					if tc.method == "HEAD" && tc.status == 200 {
						wantLen = size
					}
					if tc.status != 416 && hd.Get("Content-Type") != "application/octet-stream" {
						t.Errorf("Content-Type %q", hd.Get("Content-Type"))
					}
					if got := hd.Get("Content-Length"); got != strconv.FormatInt(wantLen, 10) && !(tc.status == 416 && got == strconv.Itoa(len(body))) {
						t.Errorf("Content-Length %q, want %d (body %d bytes)", got, wantLen, len(body))
					}
					if tc.method == "GET" && tc.status != 416 && !bytes.Equal(body, f.blob[tc.start:tc.end]) {
						t.Errorf("body: %d bytes, want blob[%d:%d]", len(body), tc.start, tc.end)
					}
					if tc.method == "HEAD" && len(body) != 0 {
						t.Errorf("HEAD with a body of %d bytes", len(body))
					}
					if got := f.obs.last(); got.source != "containerd" || got.route != routeBlob {
						t.Errorf("observed %+v", got)
					}
				})
			}
		})
	}
}

func TestHandlerBlobMultiRangeServesWhole(t *testing.T) {
	for _, seekable := range []bool{false, true} {
		f := newFixture(t, func(f *fixture, _ *Config) { f.local.seekable = seekable })
		resp, body, err := doRequest(t, "GET", f.url("/v2/library/alpine/blobs/"+f.blobDigest.String()),
			http.Header{"Range": {"bytes=0-1,5-6"}})
		if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, f.blob) {
			t.Fatalf("multi-range, seekable=%v: %v %v, %d bytes", seekable, err, resp, len(body))
		}
	}
}

func TestHandlerBlobAbortsOnFailingSource(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(f *fixture, cfg *Config)
	}{
		{"stream fails", func(f *fixture, _ *Config) { f.local.failAt = 300 << 10 }},
		{"stream stalls", func(f *fixture, cfg *Config) { f.local.stallAt = 300 << 10; cfg.StallTimeout = 300 * time.Millisecond }},
		{"spans fail", func(f *fixture, _ *Config) { f.local.spans = true; f.local.failAt = 300 << 10 }},
		{"spans stall", func(f *fixture, cfg *Config) {
			f.local.spans = true
			f.local.stallAt = 300 << 10
			cfg.StallTimeout = 300 * time.Millisecond
		}},
		{"seekable fails", func(f *fixture, _ *Config) { f.local.seekable = true; f.local.failAt = 300 << 10 }},
		{"seekable stalls", func(f *fixture, cfg *Config) {
			f.local.seekable = true
			f.local.stallAt = 300 << 10
			cfg.StallTimeout = 300 * time.Millisecond
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.setup)
			resp, body, err := doRequest(t, "GET", f.url("/v2/library/alpine/blobs/"+f.blobDigest.String()), nil)
			if err == nil {
				t.Fatalf("response completed: %v, %d bytes", resp.Status, len(body))
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("error %v, want a cut-off body", err)
			}
			if len(body) >= len(f.blob) {
				t.Errorf("%d bytes arrived", len(body))
			}
			// A retry from where the body stopped works once the source heals.
			f.local.failAt, f.local.stallAt = -1, -1
			resp, rest, err := doRequest(t, "GET", f.url("/v2/library/alpine/blobs/"+f.blobDigest.String()),
				http.Header{"Range": {fmt.Sprintf("bytes=%d-", len(body))}})
			if err != nil || resp.StatusCode != 206 || !bytes.Equal(append(body, rest...), f.blob) {
				t.Fatalf("resume: %v %v", err, resp)
			}
		})
	}
}

// A source whose stream fails or stalls before its first byte has sent
// nothing, not even the headers: the next source answers, and a client
// never sees the connection cut before a response (containerd would then
// take the blob from the upstream itself).
func TestHandlerBlobFailingBeforeItsFirstByteGoesToTheNextSource(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(f *fixture, cfg *Config)
	}{
		{"stream fails", func(f *fixture, _ *Config) { f.local.failAt = 0 }},
		{"stream stalls", func(f *fixture, cfg *Config) { f.local.stallAt = 0; cfg.StallTimeout = 300 * time.Millisecond }},
		{"range stream fails", func(f *fixture, _ *Config) { f.local.failAt = 1000 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.setup)
			url := f.url("/v2/library/alpine/blobs/" + f.blobDigest.String())
			var hdr http.Header
			want := f.blob
			if f.local.failAt == 1000 {
				hdr, want = http.Header{"Range": {"bytes=1000-"}}, f.blob[1000:]
			}
			// Only the first source holds it: nothing answers.
			resp, _, err := doRequest(t, "GET", url, hdr)
			if err != nil || resp.StatusCode != http.StatusNotFound {
				t.Fatalf("with no other source: %v %v, want a 404", err, resp)
			}
			f.upstream.addBlob(f.ref, f.blob)
			resp, body, err := doRequest(t, "GET", url, hdr)
			if err != nil || resp.StatusCode/100 != 2 || !bytes.Equal(body, want) {
				t.Fatalf("%v %v, %d bytes, want the blob from the next source", err, resp, len(body))
			}
			if got := resp.Header.Get("Content-Length"); got != strconv.Itoa(len(want)) {
				t.Errorf("Content-Length %q, want %d", got, len(want))
			}
			if f.upstream.opens.Load() != 1 {
				t.Errorf("the next source was opened %d times, want 1", f.upstream.opens.Load())
			}
		})
	}
}

// The observer's total runs until the response ended: a body cut off after
// a stall reports at least the stall timeout past its first byte.
func TestHandlerObserverTotalCoversBody(t *testing.T) {
	const stall = 300 * time.Millisecond
	f := newFixture(t, func(f *fixture, cfg *Config) { f.local.stallAt = 300 << 10; cfg.StallTimeout = stall })
	if _, _, err := doRequest(t, "GET", f.url("/v2/library/alpine/blobs/"+f.blobDigest.String()), nil); err == nil {
		t.Fatal("stalled response completed")
	}
	got := f.obs.wait(t, 1)
	if got.route != routeBlob || got.bytes != 300<<10 || got.ttfb <= 0 || got.total-got.ttfb < stall {
		t.Fatalf("observed %+v, want %d bytes and total at least %s past ttfb", got, 300<<10, stall)
	}

	f.local.stallAt = -1
	resp, body, err := doRequest(t, "GET", f.url("/v2/library/alpine/blobs/"+f.blobDigest.String()), nil)
	if err != nil || resp.StatusCode != 200 || len(body) != len(f.blob) {
		t.Fatalf("healed source: %v %v", err, resp)
	}
	// The client has every byte before the handler returns: wait for its report.
	if got := f.obs.wait(t, 2); got.bytes != int64(len(f.blob)) || got.total < got.ttfb {
		t.Fatalf("observed %+v, want the whole blob and total >= ttfb", got)
	}
}

func TestHandlerBlobFallback(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   func(f *fixture)
		status  int
		wantSrc string
	}{
		{"local missing, upstream has it", func(f *fixture) {
			f.upstream.blobs = f.local.blobs
			f.local.blobs = map[string][]byte{}
		}, 200, "upstream"},
		{"local hangs, upstream has it", func(f *fixture) {
			f.upstream.blobs = f.local.blobs
			f.local.blockLookups = true
		}, 200, "upstream"},
		{"local hangs, upstream lacks it", func(f *fixture) { f.local.blockLookups = true }, 404, ""},
		{"both error", func(f *fixture) {
			f.local.lookupErr = errors.New("grpc unavailable")
			f.upstream.lookupErr = errors.New("dns")
		}, 404, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(f *fixture, cfg *Config) { cfg.LookupTimeout = 500 * time.Millisecond })
			tc.setup(f)
			resp, body, err := doRequest(t, "GET", f.url("/v2/library/alpine/blobs/"+f.blobDigest.String()), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status == 200 && !bytes.Equal(body, f.blob) {
				t.Fatal("wrong body")
			}
			if tc.status == 404 && ociCode(t, body) != codeBlobUnknown {
				t.Fatalf("body %s", body)
			}
			if got := f.obs.last().source; got != tc.wantSrc {
				t.Errorf("source %q, want %q", got, tc.wantSrc)
			}
		})
	}
}

func TestHandlerRefusesImpossibleEmptyBlob(t *testing.T) {
	f := newFixture(t, nil)
	fake := digest.FromString("not empty")
	f.local.blobs[f.ref.String()+"@"+fake.String()] = nil
	resp, _, err := doRequest(t, "GET", f.url("/v2/library/alpine/blobs/"+fake.String()), nil)
	if err != nil || resp.StatusCode != 404 {
		t.Fatalf("%v %v", err, resp)
	}
	empty := f.local.addBlob(f.ref, nil)
	resp, body, err := doRequest(t, "GET", f.url("/v2/library/alpine/blobs/"+empty.String()), nil)
	if err != nil || resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get("Content-Length") != "0" {
		t.Fatalf("empty blob: %v %v", err, resp)
	}
}

func TestHandlerHeadBlobDoesNotOpen(t *testing.T) {
	f := newFixture(t, nil)
	resp, _, err := doRequest(t, "HEAD", f.url("/v2/library/alpine/blobs/"+f.blobDigest.String()), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", err, resp)
	}
	if n := f.local.opens.Load(); n != 0 {
		t.Errorf("HEAD opened the blob %d times", n)
	}
}

// A client that stops reading a blob loses the response after the stall
// timeout: the handler returns (the observer hears of it), so its source's
// reader and buffers are not pinned for as long as the connection lives.
func TestHandlerCutsAResponseTheClientStoppedReading(t *testing.T) {
	for _, kind := range []string{"stream", "spans", "seekable"} {
		t.Run(kind, func(t *testing.T) {
			big := randomBytes(64<<20, 2) // far more than loopback's socket buffers
			var dgst digest.Digest
			f := newFixture(t, func(f *fixture, cfg *Config) {
				f.local.spans, f.local.seekable = kind == "spans", kind == "seekable"
				dgst = f.local.addBlob(f.ref, big)
				cfg.StallTimeout = 300 * time.Millisecond
			})
			conn, err := net.DialTimeout("tcp", f.srv.Listener.Addr().String(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
				t.Fatal(err)
			}
			if _, err := fmt.Fprintf(conn, "GET /v2/library/alpine/blobs/%s HTTP/1.1\r\nHost: x\r\n\r\n", dgst); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(conn).ReadString('\n')
			if err != nil || !strings.Contains(line, "200") {
				t.Fatalf("status line %q: %v", line, err)
			}
			// The client reads nothing more; the handler must end anyway.
			got := f.obs.wait(t, 1)
			if got.bytes >= int64(len(big)) {
				t.Fatalf("the whole blob was written to a client that stopped reading: %+v", got)
			}
			t.Logf("cut after %d bytes, %s", got.bytes, got.total)
		})
	}
}

// streamingObserver also hears body bytes as they are written.
type streamingObserver struct {
	recordingObserver
	smu      sync.Mutex
	streamed []int64 // each call's bytes, all from source "containerd"
	sources  map[string]bool
}

func (o *streamingObserver) Streamed(source string, n int64) {
	o.smu.Lock()
	defer o.smu.Unlock()
	o.streamed = append(o.streamed, n)
	o.sources[source] = true
}

// A blob's bytes reach a StreamObserver as they are written, a segment at a
// time, not in one count at the end (the status page's rate by source
// jumped at the end of a 4 GiB layer); whole-file and ranged replies alike.
func TestHandlerStreamsBodyBytesBySource(t *testing.T) {
	obs := &streamingObserver{sources: map[string]bool{}}
	big := randomBytes(3<<20+5, 7)
	bigDigest := digest.FromBytes(big)
	path := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(path, big, 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(f *fixture, cfg *Config) {
		// A file, so the reply goes out through ReadFrom (sendfile).
		cfg.Sources = []oci.Source{&fileSource{path: path, dgst: bigDigest}}
		cfg.Observer = obs
	})
	for _, tc := range []struct {
		rng  string
		want int64
	}{
		{"", int64(len(big))},
		{"bytes=100-", int64(len(big)) - 100},
		{"bytes=0-99", 100},
	} {
		obs.smu.Lock()
		obs.streamed = nil
		obs.smu.Unlock()
		obs.mu.Lock()
		before := len(obs.seen)
		obs.mu.Unlock()
		h := http.Header{}
		if tc.rng != "" {
			h.Set("Range", tc.rng)
		}
		resp, body, err := doRequest(t, "GET", f.url("/v2/library/alpine/blobs/"+bigDigest.String()), h)
		if err != nil || int64(len(body)) != tc.want {
			t.Fatalf("range %q: %v %v, %d bytes", tc.rng, err, resp, len(body))
		}
		end := obs.wait(t, before+1)
		obs.smu.Lock()
		var sum int64
		for _, n := range obs.streamed {
			sum += n
			if n > streamSegment {
				t.Errorf("range %q: one report of %d bytes, more than a segment", tc.rng, n)
			}
		}
		calls := len(obs.streamed)
		obs.smu.Unlock()
		if sum != end.bytes || sum != tc.want {
			t.Errorf("range %q: streamed %d bytes in %d reports, the response %d, want %d", tc.rng, sum, calls, end.bytes, tc.want)
		}
		if tc.want > 1<<20 && calls < int(tc.want>>20) {
			t.Errorf("range %q: %d bytes in %d reports, want one per segment", tc.rng, sum, calls)
		}
	}
	if !obs.sources["containerd"] || len(obs.sources) != 1 {
		t.Errorf("streamed sources %v, want containerd only", obs.sources)
	}
}

// fileSource serves one blob from a file as a SeekableBlob over *os.File.
type fileSource struct {
	path string
	dgst digest.Digest
}

func (s *fileSource) Name() string { return "containerd" }
func (s *fileSource) Resolve(context.Context, oci.Ref, string) (ocispec.Descriptor, error) {
	return ocispec.Descriptor{}, oci.ErrNotFound
}
func (s *fileSource) Manifest(context.Context, oci.Ref, digest.Digest) (*oci.Manifest, error) {
	return nil, oci.ErrNotFound
}
func (s *fileSource) Blob(_ context.Context, _ oci.Ref, d digest.Digest) (oci.Blob, error) {
	if d != s.dgst {
		return nil, oci.ErrNotFound
	}
	f, err := os.Open(s.path)
	if err != nil {
		return nil, err
	}
	return fileBlob{f}, nil
}

type fileBlob struct{ f *os.File }

func (b fileBlob) Size() int64 {
	st, err := b.f.Stat()
	if err != nil {
		return -1
	}
	return st.Size()
}
func (b fileBlob) ReadSeeker() io.ReadSeeker { return b.f }
func (b fileBlob) Close() error              { return b.f.Close() }
func (b fileBlob) Open(_ context.Context, off int64) (io.ReadCloser, error) {
	return io.NopCloser(io.NewSectionReader(b.f, off, b.Size()-off)), nil
}
