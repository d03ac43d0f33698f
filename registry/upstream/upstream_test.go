package upstream

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/registry"
	"github.com/dregistry/dregistry/registry/oci"
)

// tokenFront puts the registry token flow in front of a real registry: /v2/
// requests need a bearer token, which /token hands out (to anyone, or to
// user:pass with Basic auth). Blob GETs may be redirected to another host.
type tokenFront struct {
	backend    http.Handler
	token      string
	user, pass string
	storage    *httptest.Server // when set, blob GETs redirect here

	mu            sync.Mutex
	tokenRequests int
	authSeen      []string // Authorization of every /v2/ request
	srv           *httptest.Server
}

func newTokenFront(t *testing.T, backend http.Handler) *tokenFront {
	f := &tokenFront{backend: backend, token: "tok-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	f.srv = httptest.NewServer(f)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *tokenFront) host() string { return strings.TrimPrefix(f.srv.URL, "http://") }

func (f *tokenFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/token" {
		f.mu.Lock()
		f.tokenRequests++
		f.mu.Unlock()
		if f.user != "" {
			if u, p, ok := r.BasicAuth(); !ok || u != f.user || p != f.pass {
				http.Error(w, "bad credentials", http.StatusUnauthorized)
				return
			}
		}
		if !strings.HasSuffix(r.URL.Query().Get("scope"), ":pull") {
			http.Error(w, "want a pull scope", http.StatusBadRequest)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"token": f.token})
		return
	}
	f.mu.Lock()
	f.authSeen = append(f.authSeen, r.Header.Get("Authorization"))
	f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="test"`, f.srv.URL))
		writeError(w, r, http.StatusUnauthorized, "UNAUTHORIZED", "token needed")
		return
	}
	if f.storage != nil && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
		http.Redirect(w, r, f.storage.URL+r.URL.Path, http.StatusTemporaryRedirect)
		return
	}
	f.backend.ServeHTTP(w, r)
}

func (f *tokenFront) stats() (tokens int, auth []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tokenRequests, append([]string(nil), f.authSeen...)
}

// pushed is an image pushed to the test registry.
type pushed struct {
	manifest       []byte
	manifestDigest digest.Digest
	mediaType      string
	layer          []byte
	layerDigest    digest.Digest
}

// newBackend starts go-containerregistry's in-memory registry on loopback
// and pushes a random image as test/app:v1.
func newBackend(t *testing.T) (http.Handler, pushed) {
	t.Helper()
	h := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	img, err := random.Image(300<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(strings.TrimPrefix(srv.URL, "http://")+"/test/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	var p pushed
	p.manifest, _ = img.RawManifest()
	p.manifestDigest = digest.FromBytes(p.manifest)
	mt, _ := img.MediaType()
	p.mediaType = string(mt)
	layers, _ := img.Layers()
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	p.layer, _ = io.ReadAll(rc)
	p.layerDigest = digest.FromBytes(p.layer)
	return h, p
}

func newTestUpstream(t *testing.T, cfg Config) *Client {
	t.Helper()
	cfg.Logger = testLogger(t)
	u, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func readBlob(ctx context.Context, b oci.Blob, offset int64) ([]byte, error) {
	rc, err := b.Open(ctx, offset)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func TestUpstreamWithTokenAuth(t *testing.T) {
	backend, img := newBackend(t)
	front := newTokenFront(t, backend)
	u := newTestUpstream(t, Config{PlainHTTP: []string{front.host()}})
	ctx := testCtx(t)
	ref := oci.Ref{Registry: front.host(), Repository: "test/app"}

	desc, err := u.Resolve(ctx, ref, "v1")
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != img.manifestDigest || desc.Size != int64(len(img.manifest)) || desc.MediaType != img.mediaType {
		t.Fatalf("Resolve = %+v, want %s %d %s", desc, img.manifestDigest, len(img.manifest), img.mediaType)
	}
	m, err := u.Manifest(ctx, ref, img.manifestDigest)
	if err != nil || !bytes.Equal(m.Content, img.manifest) || m.MediaType != img.mediaType {
		t.Fatalf("Manifest = %+v, %v", m, err)
	}
	b, err := u.Blob(ctx, ref, img.layerDigest)
	if err != nil || b.Size() != int64(len(img.layer)) {
		t.Fatalf("Blob = %v, %v", b, err)
	}
	for _, offset := range []int64{0, 1, 100 << 10, int64(len(img.layer)) - 1, int64(len(img.layer))} {
		got, err := readBlob(ctx, b, offset)
		if err != nil || !bytes.Equal(got, img.layer[offset:]) {
			t.Fatalf("Open(%d): %d bytes, %v", offset, len(got), err)
		}
	}
	if _, err := u.Resolve(ctx, ref, "nope"); !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("unknown tag: %v", err)
	}
	if _, err := u.Blob(ctx, ref, digest.FromString("x")); !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("unknown blob: %v", err)
	}
	if _, err := u.Manifest(ctx, ref, digest.FromString("x")); !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("unknown manifest: %v", err)
	}
	tokens, auth := front.stats()
	if tokens != 1 {
		t.Errorf("%d token requests, want 1 (the transport is cached)", tokens)
	}
	bearer := 0
	for _, a := range auth {
		if a == "Bearer "+front.token {
			bearer++
		}
	}
	if bearer < 8 {
		t.Errorf("only %d requests carried the token: %q", bearer, auth)
	}
}

func TestUpstreamDockerConfigCredentials(t *testing.T) {
	backend, img := newBackend(t)
	front := newTokenFront(t, backend)
	front.user, front.pass = "puller", "s3cret"
	ref := oci.Ref{Registry: front.host(), Repository: "test/app"}
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	auth := base64.StdEncoding.EncodeToString([]byte("puller:s3cret"))
	good := write("good.json", fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, front.host(), auth))
	wrong := write("wrong.json", fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, front.host(),
		base64.StdEncoding.EncodeToString([]byte("puller:nope"))))
	other := write("other.json", fmt.Sprintf(`{"auths":{"elsewhere.io":{"auth":%q}}}`, auth))

	for _, tc := range []struct {
		name, config string
		ok           bool
	}{
		{"credentials for the registry", good, true},
		{"wrong password", wrong, false},
		{"credentials for another registry", other, false},
		{"anonymous", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newTestUpstream(t, Config{DockerConfig: tc.config, PlainHTTP: []string{front.host()}})
			desc, err := u.Resolve(testCtx(t), ref, "v1")
			if tc.ok && (err != nil || desc.Digest != img.manifestDigest) {
				t.Fatalf("Resolve = %+v, %v", desc, err)
			}
			if !tc.ok && (err == nil || errors.Is(err, oci.ErrNotFound)) {
				t.Fatalf("Resolve without valid credentials: %v", err)
			}
		})
	}

	for _, bad := range []string{filepath.Join(dir, "missing.json"), write("broken.json", "{not json")} {
		if _, err := New(Config{DockerConfig: bad}); err == nil {
			t.Errorf("New accepted docker config %s", bad)
		}
	}
	if _, err := New(Config{PlainHTTP: []string{"http://x"}}); err == nil {
		t.Error("New accepted a URL as a plain HTTP registry")
	}
}

func TestUpstreamFollowsRedirectWithoutLeakingToken(t *testing.T) {
	backend, img := newBackend(t)
	front := newTokenFront(t, backend)
	var mu sync.Mutex
	var storageAuth []string
	front.storage = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		storageAuth = append(storageAuth, r.Header.Get("Authorization"))
		mu.Unlock()
		backend.ServeHTTP(w, r)
	}))
	t.Cleanup(front.storage.Close)
	u := newTestUpstream(t, Config{PlainHTTP: []string{front.host(), strings.TrimPrefix(front.storage.URL, "http://")}})
	ctx := testCtx(t)
	b, err := u.Blob(ctx, oci.Ref{Registry: front.host(), Repository: "test/app"}, img.layerDigest)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readBlob(ctx, b, 0)
	if err != nil || !bytes.Equal(got, img.layer) {
		t.Fatalf("redirected blob: %d bytes, %v", len(got), err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(storageAuth) != 1 || storageAuth[0] != "" {
		t.Errorf("storage host saw Authorization %q", storageAuth)
	}
}

func TestUpstreamTransportCacheIsBounded(t *testing.T) {
	backend, _ := newBackend(t)
	front := newTokenFront(t, backend)
	u := newTestUpstream(t, Config{MaxRepositories: 2, PlainHTTP: []string{front.host()}})
	ctx := testCtx(t)
	for _, repo := range []string{"a/one", "a/two", "a/three", "a/one"} {
		if _, err := u.Resolve(ctx, oci.Ref{Registry: front.host(), Repository: repo}, "v1"); !errors.Is(err, oci.ErrNotFound) {
			t.Fatalf("%s: %v", repo, err)
		}
	}
	if n := u.transports.len(); n != 2 {
		t.Errorf("%d cached transports, want 2", n)
	}
	if tokens, _ := front.stats(); tokens != 4 {
		t.Errorf("%d token requests, want 4 (a/one was evicted and fetched again)", tokens)
	}
}

// scripted is a misbehaving upstream: /v2/ answers 200, everything else goes
// to the test's function.
func scripted(t *testing.T, fn http.HandlerFunc) (host string, release chan struct{}) {
	release = make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			w.WriteHeader(http.StatusOK)
			return
		}
		fn(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs first: unblocks stalled handlers
	return strings.TrimPrefix(srv.URL, "http://"), release
}

func TestUpstreamRejectsMalformedReplies(t *testing.T) {
	blob := randomBytes(200<<10, 7)
	dgst := digest.FromBytes(blob)
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}`)
	mdgst := digest.FromBytes(manifest)
	for _, tc := range []struct {
		name  string
		serve http.HandlerFunc
		call  func(ctx context.Context, u *Client, ref oci.Ref) error
		want  error // nil: any error
	}{
		{"blob with wrong bytes", func(w http.ResponseWriter, r *http.Request) {
			bad := append([]byte(nil), blob...)
			bad[len(bad)-1]++
			w.Header().Set("Content-Length", strconv.Itoa(len(bad)))
			_, _ = w.Write(bad)
		}, func(ctx context.Context, u *Client, ref oci.Ref) error {
			return readAll(ctx, u, ref, dgst)
		}, oci.ErrDigestMismatch},
		{"blob cut short", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
			if r.Method == http.MethodGet {
				_, _ = w.Write(blob[:1000])
				http.NewResponseController(w).Flush()
				panic(http.ErrAbortHandler)
			}
		}, func(ctx context.Context, u *Client, ref oci.Ref) error {
			return readAll(ctx, u, ref, dgst)
		}, io.ErrUnexpectedEOF},
		{"blob chunked and short", func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodHead {
				w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
				return
			}
			_, _ = w.Write(blob[:1000])
			http.NewResponseController(w).Flush()
		}, func(ctx context.Context, u *Client, ref oci.Ref) error {
			return readAll(ctx, u, ref, dgst)
		}, io.ErrUnexpectedEOF},
		{"blob GET length differs from HEAD", func(w http.ResponseWriter, r *http.Request) {
			n := len(blob)
			if r.Method == http.MethodGet {
				n--
			}
			w.Header().Set("Content-Length", strconv.Itoa(n))
			_, _ = w.Write(blob[:n])
		}, func(ctx context.Context, u *Client, ref oci.Ref) error {
			return readAll(ctx, u, ref, dgst)
		}, nil},
		{"blob HEAD names another digest", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Docker-Content-Digest", digest.FromString("other").String())
			_, _ = w.Write(blob)
		}, func(ctx context.Context, u *Client, ref oci.Ref) error {
			_, err := u.Blob(ctx, ref, dgst)
			return err
		}, oci.ErrDigestMismatch},
		{"manifest is an HTML page", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = io.WriteString(w, "<html>maintenance</html>")
		}, func(ctx context.Context, u *Client, ref oci.Ref) error {
			_, err := u.Manifest(ctx, ref, mdgst)
			return err
		}, nil},
		{"manifest with other bytes", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			_, _ = w.Write(append([]byte(" "), manifest...))
		}, func(ctx context.Context, u *Client, ref oci.Ref) error {
			_, err := u.Manifest(ctx, ref, mdgst)
			return err
		}, oci.ErrDigestMismatch},
		{"manifest too large", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			_, _ = w.Write(make([]byte, oci.MaxManifestSize+1))
		}, func(ctx context.Context, u *Client, ref oci.Ref) error {
			_, err := u.Manifest(ctx, ref, mdgst)
			return err
		}, nil},
		{"tag is an HTML page", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = io.WriteString(w, "<html>login</html>")
		}, func(ctx context.Context, u *Client, ref oci.Ref) error {
			_, err := u.Resolve(ctx, ref, "v1")
			return err
		}, nil},
		{"server error", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "boom", http.StatusInternalServerError)
		}, func(ctx context.Context, u *Client, ref oci.Ref) error {
			_, err := u.Resolve(ctx, ref, "v1")
			return err
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host, _ := scripted(t, tc.serve)
			u := newTestUpstream(t, Config{PlainHTTP: []string{host}})
			err := tc.call(testCtx(t), u, oci.Ref{Registry: host, Repository: "test/app"})
			if err == nil || errors.Is(err, oci.ErrNotFound) {
				t.Fatalf("got %v, want a clear error", err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			t.Log(err)
		})
	}
}

func readAll(ctx context.Context, u *Client, ref oci.Ref, dgst digest.Digest) error {
	b, err := u.Blob(ctx, ref, dgst)
	if err != nil {
		return err
	}
	defer b.Close()
	_, err = readBlob(ctx, b, 0)
	return err
}

func TestUpstreamResolveWithoutDigestHeaderHashesBody(t *testing.T) {
	manifest := []byte(`{"schemaVersion":2,"config":{},"layers":[]}`)
	host, _ := scripted(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			return // no digest, no length
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(manifest)
	})
	u := newTestUpstream(t, Config{PlainHTTP: []string{host}})
	desc, err := u.Resolve(testCtx(t), oci.Ref{Registry: host, Repository: "x"}, "v1")
	if err != nil || desc.Digest != digest.FromBytes(manifest) || desc.Size != int64(len(manifest)) ||
		desc.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Fatalf("Resolve = %+v, %v", desc, err)
	}
}

// TestMirrorOverUpstream pulls through the handler from a real registry
// behind token auth, then from lying and stalling upstreams.
func TestMirrorOverUpstream(t *testing.T) {
	backend, img := newBackend(t)
	front := newTokenFront(t, backend)
	u := newTestUpstream(t, Config{PlainHTTP: []string{front.host()}})
	mirror := httptest.NewServer(registry.NewHandler(registry.Config{Sources: []oci.Source{u}, TagSources: []oci.Source{u}, Logger: testLogger(t)}))
	t.Cleanup(mirror.Close)
	ns := "?ns=" + front.host()
	containerdAuth := http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("user:pull-secret"))}}

	resp, _, err := doRequest(t, "HEAD", mirror.URL+"/v2/test/app/manifests/v1"+ns, containerdAuth)
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != img.manifestDigest.String() ||
		resp.Header.Get("Content-Length") != strconv.Itoa(len(img.manifest)) || resp.Header.Get("Content-Type") != img.mediaType {
		t.Fatalf("HEAD tag: %v %+v", err, resp)
	}
	resp, body, err := doRequest(t, "GET", mirror.URL+"/v2/test/app/manifests/"+img.manifestDigest.String()+ns, containerdAuth)
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, img.manifest) {
		t.Fatalf("GET manifest: %v %+v", err, resp)
	}
	resp, body, err = doRequest(t, "GET", mirror.URL+"/v2/test/app/blobs/"+img.layerDigest.String()+ns,
		http.Header{"Range": {"bytes=1000-"}})
	if err != nil || resp.StatusCode != 206 || !bytes.Equal(body, img.layer[1000:]) ||
		resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 1000-%d/%d", len(img.layer)-1, len(img.layer)) {
		t.Fatalf("GET blob range: %v %+v", err, resp)
	}
	_, auth := front.stats()
	for _, a := range auth {
		if strings.Contains(a, "Basic") {
			t.Fatalf("containerd's Authorization reached the upstream: %q", a)
		}
	}
}

func TestMirrorAbortsOnBadUpstream(t *testing.T) {
	blob := randomBytes(2<<20, 9)
	dgst := digest.FromBytes(blob)
	for _, tc := range []struct {
		name   string
		serve  func(release chan struct{}) http.HandlerFunc
		lookup time.Duration // short only where the upstream is meant to miss it
		status int           // 0: the response is cut off
	}{
		{"lying upstream", func(chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				bad := append([]byte(nil), blob...)
				bad[0]++
				w.Header().Set("Content-Length", strconv.Itoa(len(bad)))
				_, _ = w.Write(bad)
			}
		}, 10 * time.Second, 0},
		{"upstream stalls mid-body", func(release chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
				if r.Method == http.MethodGet {
					_, _ = w.Write(blob[:len(blob)/2])
					http.NewResponseController(w).Flush()
					select {
					case <-r.Context().Done():
					case <-release:
					}
				}
			}
		}, 10 * time.Second, 0},
		{"upstream never answers", func(release chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-release:
				}
			}
		}, 300 * time.Millisecond, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var serve http.HandlerFunc
			host, release := scripted(t, func(w http.ResponseWriter, r *http.Request) { serve(w, r) })
			serve = tc.serve(release)
			u := newTestUpstream(t, Config{PlainHTTP: []string{host}})
			mirror := httptest.NewServer(registry.NewHandler(registry.Config{
				Sources: []oci.Source{u}, TagSources: []oci.Source{u}, Logger: testLogger(t),
				LookupTimeout: tc.lookup, StallTimeout: 300 * time.Millisecond,
			}))
			t.Cleanup(mirror.Close)
			resp, body, err := doRequest(t, "GET", mirror.URL+"/v2/test/app/blobs/"+dgst.String()+"?ns="+host, nil)
			if tc.status != 0 {
				if err != nil || resp.StatusCode != tc.status {
					t.Fatalf("got %v %+v, want %d", err, resp, tc.status)
				}
				return
			}
			if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("response not cut off: %v", err)
			}
			if len(body) >= len(blob) {
				t.Fatalf("client received all %d bytes", len(body))
			}
			// The mirror keeps serving.
			if resp, _, err := doRequest(t, "GET", mirror.URL+"/v2/", nil); err != nil || resp.StatusCode != 200 {
				t.Fatalf("GET /v2/ afterwards: %v", err)
			}
		})
	}
}

func TestUpstreamBlobWhereHEADIsRefused(t *testing.T) {
	blob := randomBytes(300<<10, 13)
	dgst := digest.FromBytes(blob)
	var mu sync.Mutex
	gets := 0
	host, _ := scripted(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		mu.Lock()
		gets++
		mu.Unlock()
		w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
		_, _ = w.Write(blob)
	})
	u := newTestUpstream(t, Config{PlainHTTP: []string{host}})
	ctx := testCtx(t)
	b, err := u.Blob(ctx, oci.Ref{Registry: host, Repository: "x/y"}, dgst)
	if err != nil || b.Size() != int64(len(blob)) {
		t.Fatalf("Blob = %v, %v", b, err)
	}
	defer b.Close()
	for _, offset := range []int64{0, 5} {
		got, err := readBlob(ctx, b, offset)
		if err != nil || !bytes.Equal(got, blob[offset:]) {
			t.Fatalf("Open(%d): %d bytes, %v", offset, len(got), err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if gets != 2 {
		t.Errorf("%d GETs for Blob and two Opens, want 2 (the first reuses Blob's GET)", gets)
	}
}
