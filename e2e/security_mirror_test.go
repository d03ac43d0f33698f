package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/testenv"
	"github.com/dregistry/dregistry/registry/oci"
)

// httpGet is one bounded GET from the test's own namespace.
func httpGet(t *testing.T, rawURL string, timeout time.Duration) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		t.Fatalf("GET %s: body: %v", rawURL, err)
	}
	return resp.StatusCode, body
}

// TestOutsiderGetsNoBytesFromANode: a host on the node's network that is
// not a member gets a 403 and no byte of content from every endpoint of a
// node listening on all addresses (as the chart runs it), while the node's
// own containerd pulls through it.
func TestOutsiderGetsNoBytesFromANode(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts containerd, docker-registry and dregistry")
	}
	testenv.RequireRoot(t)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(60)+":5500")
	img := testenv.PushImage(t, up, "e2e/private", "v1", 200<<10)
	port := testenv.FreePort(t)
	node := testenv.StartNode(t, testenv.NodeConfig{Name: "node", IP: testenv.LoopbackIP(61), Upstream: up,
		HTTPListen: ":" + port})

	// (c) containerd on the node pulls through it: the content is now on
	// the node, in containerd and seeded.
	node.Pull(t, img.Ref)
	checkPulledThroughMirror(t, up, img.Blobs())
	layer := img.Layers[0]
	_, layerBytes := httpGet(t, up.URL()+"/v2/"+img.Repo+"/blobs/"+layer.Digest.String(), 30*time.Second)
	if int64(len(layerBytes)) != layer.Size {
		t.Fatalf("upstream layer: %d bytes, want %d", len(layerBytes), layer.Size)
	}

	// The outsider's link is made after the daemon started: the node's end
	// is an address the host gained meanwhile.
	o := testenv.NewOutsider(t)
	base := "http://" + net.JoinHostPort(o.HostAddr.String(), port)
	if status, _ := httpGet(t, base+"/v2/", 10*time.Second); status != http.StatusOK {
		t.Fatalf("GET /v2/ from this host's new address %s: %d, want 200", o.HostAddr, status)
	}

	ns := url.Values{"ns": {up.Addr}}.Encode()
	peerQ := url.Values{"ns": {up.Addr}, "repo": {img.Repo}}.Encode()
	secrets := [][]byte{layerBytes[:64], layerBytes[len(layerBytes)-64:], img.ManifestBytes}
	for _, tc := range []struct {
		path string
		oci  bool // an OCI error body with code DENIED
	}{
		{"/v2/", true},
		{"/v2/" + img.Repo + "/blobs/" + layer.Digest.String() + "?" + ns, true},
		{"/v2/" + img.Repo + "/blobs/" + layer.Digest.String(), true},
		{"/v2/" + img.Repo + "/manifests/" + img.Tag + "?" + ns, true},
		{"/v2/" + img.Repo + "/manifests/" + img.Manifest.Digest.String() + "?" + ns, true},
		{"/v2/" + img.Repo + "/tags/list?" + ns, true},
		{"/peer/v1/blobs/" + layer.Digest.String(), false},
		{"/peer/v1/metainfo/" + layer.Digest.String(), false},
		{"/peer/v1/egress/blobs/" + layer.Digest.String() + "?" + peerQ, false},
		{"/peer/v1/egress/manifests/" + img.Manifest.Digest.String() + "?" + peerQ, false},
		{"/peer/v1/egress/tags/" + img.Tag + "?" + peerQ, false},
		{"/admin/v1/stats", false},
		{"/admin/v1/seeders/" + layer.Digest.String(), false},
		{"/admin/v1/torrents", false},
		{"/", false},
	} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			req, err := http.NewRequestWithContext(ctx, method, base+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set(oci.NoForwardHeader, "1") // as a member would send it
			req.Header.Set("Authorization", "Basic b3V0c2lkZXI6cGFzcw==")
			status, body, err := o.Do(req)
			cancel()
			if err != nil {
				t.Fatalf("%s %s from the outsider: %v", method, tc.path, err)
			}
			if status != http.StatusForbidden {
				t.Errorf("%s %s from the outsider: %d (%d bytes), want 403", method, tc.path, status, len(body))
			}
			for _, s := range secrets {
				if bytes.Contains(body, s) {
					t.Errorf("%s %s from the outsider: the body holds content bytes", method, tc.path)
				}
			}
			if len(body) > 1024 {
				t.Errorf("%s %s from the outsider: %d bytes of body", method, tc.path, len(body))
			}
			if tc.oci && method == http.MethodGet {
				var e struct{ Errors []struct{ Code string } }
				if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 || e.Errors[0].Code != "DENIED" {
					t.Errorf("GET %s from the outsider: body %q, want an OCI error DENIED", tc.path, body)
				}
			}
		}
	}

	// Nor may it order a preheat, or take the members' side of one: a
	// valid order or request gets 403 and nothing lands in k8s.io.
	for path, body := range map[string]string{
		"/admin/v1/preheat": `{"ref":"` + img.Ref + `"}`,
		"/peer/v1/preheat": `{"image":"` + img.Ref + `","digest":"` + img.Manifest.Digest.String() +
			`","mediaType":"` + img.Manifest.MediaType + `","size":` + fmt.Sprint(img.Manifest.Size) + `,"namespace":"k8s.io"}`,
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		status, answer, err := o.Do(req)
		cancel()
		if err != nil || status != http.StatusForbidden {
			t.Errorf("POST %s from the outsider: %d %s %v, want 403", path, status, answer, err)
		}
	}
	if out, err := node.Containerd.Ctr(t, "-n", "k8s.io", "images", "ls", "-q"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("k8s.io after the outsider's preheat orders: %q %v, want no image", out, err)
	}

	// The node still serves its host: containerd pulls the image again
	// after removing it.
	if _, err := node.Containerd.Ctr(t, "-n", "default", "images", "rm", "--sync", img.Ref); err != nil {
		t.Fatal(err)
	}
	node.Pull(t, img.Ref)
}

// redirector is a registry that answers /v2/ and redirects every blob and
// manifest request to target, counting the requests it got.
func redirector(t *testing.T, addr, target string) *atomic.Int64 {
	t.Helper()
	hits := new(atomic.Int64)
	startHTTP(t, addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/v2/" {
			w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
			w.WriteHeader(http.StatusOK)
			return
		}
		http.Redirect(w, r, target, http.StatusTemporaryRedirect)
	}))
	return hits
}

// startHTTP serves h on addr and counts the connections it accepted.
func startHTTP(t *testing.T, addr string, h http.Handler) *atomic.Int64 {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conns := new(atomic.Int64)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return conns
}

// TestNodeFetchesOnlyNamedRegistries: a registry the operator never named
// is never contacted (a fast 404), and a named registry that redirects a
// blob to an internal service yields no byte of the service's reply.
func TestNodeFetchesOnlyNamedRegistries(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts containerd, docker-registry and dregistry")
	}
	testenv.RequireRoot(t)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(62)+":5500")
	img := testenv.PushImage(t, up, "e2e/named", "v1", 100<<10)

	// A stand-in for an instance metadata service, on loopback.
	secret := fmt.Sprintf("AccessKeyId=meta-%d-%d", os.Getpid(), time.Now().UnixNano())
	metaAddr := testenv.LoopbackIP(63) + ":8080"
	metaConns := startHTTP(t, metaAddr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat(secret+"\n", 64))
	}))
	metaPath := "/latest/meta-data/iam/security-credentials/node"
	unnamed := testenv.LoopbackIP(64) + ":5500"
	named := testenv.LoopbackIP(65) + ":5500"
	namedTLS := testenv.LoopbackIP(67) + ":5500"
	unnamedHits := redirector(t, unnamed, "http://"+metaAddr+metaPath)
	namedHits := redirector(t, named, "http://"+metaAddr+metaPath)
	// HTTPS passes the plain-HTTP rule: the address check refuses the dial.
	namedTLSHits := redirector(t, namedTLS, "https://"+metaAddr+metaPath)

	node := testenv.StartNode(t, testenv.NodeConfig{Name: "node", IP: testenv.LoopbackIP(66), Upstream: up,
		ExtraArgs: []string{"--upstream-plain-http", named, "--upstream-plain-http", namedTLS}})
	dgst := img.Layers[0].Digest.String()
	for _, tc := range []struct {
		desc, registry string
		hits           *atomic.Int64
		wantHits       bool
	}{
		{"never named: not contacted", unnamed, unnamedHits, false},
		{"named, redirecting to plain HTTP on loopback: the redirect is refused", named, namedHits, true},
		{"named, redirecting to HTTPS on loopback: the dial is refused", namedTLS, namedTLSHits, true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			for _, path := range []string{
				"/v2/e2e/named/blobs/" + dgst,
				"/v2/e2e/named/manifests/v1",
				"/v2/e2e/named/manifests/" + img.Manifest.Digest.String(),
			} {
				u := node.URL() + path + "?ns=" + url.QueryEscape(tc.registry)
				status, body := httpGet(t, u, 20*time.Second)
				if status != http.StatusNotFound {
					t.Errorf("GET %s: %d, want 404", u, status)
				}
				if bytes.Contains(body, []byte(secret[:16])) {
					t.Errorf("GET %s: the internal reply came through: %q", u, body)
				}
			}
			if got := tc.hits.Load(); (got > 0) != tc.wantHits {
				t.Errorf("the registry got %d requests, want any: %v", got, tc.wantHits)
			}
		})
	}
	if n := metaConns.Load(); n != 0 {
		t.Errorf("the internal service got %d connections through the node", n)
	}
	log, err := os.ReadFile(node.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{`msg="mirror request refused: registry not fetched"`, "registry=" + unnamed, "reason="}; !hasLine(log, want...) {
		t.Errorf("the node's log lacks a line with %q", want)
	}
	// The redirect is plain HTTP to a host not in --upstream-plain-http,
	// refused before any dial (the address check would refuse it next).
	if want := []string{`msg="upstream request refused"`, "registry=" + named, "url=http://" + metaAddr, "reason="}; !hasLine(log, want...) {
		t.Errorf("the node's log lacks a line with %q", want)
	}
	if want := []string{`msg="upstream dial refused"`, "registry=" + namedTLS, "host=" + metaAddr, "address=" + strings.Split(metaAddr, ":")[0], "reason="}; !hasLine(log, want...) {
		t.Errorf("the node's log lacks a line with %q", want)
	}
	// The named upstream still serves.
	node.Pull(t, img.Ref)
}

// hasLine says whether one line of log holds every part.
func hasLine(log []byte, parts ...string) bool {
	for _, line := range strings.Split(string(log), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}
