package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/internal/testenv"
)

// recoveryTimeout bounds the wait for a daemon to serve again after a restart
// of itself or of containerd under it.
const recoveryTimeout = 60 * time.Second

// mirror is one node (containerd + dregistry) in front of one upstream.
type mirror struct {
	up   *testenv.Registry
	node *testenv.Node
}

func startMirror(t *testing.T) mirror {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: starts containerd, docker-registry and dregistry")
	}
	testenv.RequireRoot(t)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(5)+":5500")
	// A short lookup timeout keeps the hung-upstream case brief.
	node := testenv.StartNode(t, testenv.NodeConfig{Name: "node1", IP: testenv.LoopbackIP(11), Upstream: up,
		ExtraArgs: []string{"--lookup-timeout", "2s"}})
	return mirror{up: up, node: node}
}

// url is the mirror URL of a path under /v2/<repo>/, with ns as containerd
// sends it when ns is set.
func (m mirror) url(repo, path string, ns bool) string {
	u := m.node.URL() + "/v2/" + repo + "/" + path
	if ns {
		u += "?ns=" + m.up.Addr
	}
	return u
}

// contentDigests lists the digests in the node's containerd content store.
func contentDigests(t *testing.T, node *testenv.Node) map[digest.Digest]bool {
	t.Helper()
	out, err := node.Containerd.Ctr(t, "-n", "default", "content", "ls", "-q")
	if err != nil {
		t.Fatal(err)
	}
	have := map[digest.Digest]bool{}
	for _, l := range strings.Fields(out) {
		have[digest.Digest(l)] = true
	}
	return have
}

// checkPulledThroughMirror asserts containerd never asked the upstream itself
// and dregistry fetched each blob of img from it at most once.
func checkPulledThroughMirror(t *testing.T, up *testenv.Registry, blobs []testenv.Blob) {
	t.Helper()
	reqs := up.Requests(t)
	if direct := testenv.FromContainerd(reqs); len(direct) > 0 {
		t.Errorf("containerd contacted the upstream itself %d times, first: %+v", len(direct), direct[0])
	}
	for _, b := range blobs {
		if n := testenv.BlobSends(reqs, b.Digest, b.Size); n > 1 {
			t.Errorf("upstream sent blob %s %d times, want at most once", b.Digest, n)
		}
	}
}

// TestSingleNodeMirror is issue 2's scenario on one node: its subtests run in
// order and build on each other (the first pull fills containerd), so they
// share one upstream and one node instead of starting their own.
func TestSingleNodeMirror(t *testing.T) {
	m := startMirror(t)
	small := testenv.PushImage(t, m.up, "e2e/small", "v1", 300<<10, 2<<20)
	docker := m.up.Push(t, testenv.ImageSpec{Repo: "e2e/docker", Tag: "v1", LayerSizes: []int64{200 << 10}, Format: testenv.Docker})
	multi := testenv.PushIndex(t, m.up, "e2e/multi", "v1", []string{"linux/amd64", "linux/arm64"}, 100<<10)

	t.Run("a ctr pull through the mirror is served by dregistry and never reaches the upstream from containerd", func(t *testing.T) {
		m.node.Pull(t, small.Ref)
		m.node.Pull(t, docker.Ref)
		have := contentDigests(t, m.node)
		for _, b := range append(small.Blobs(), docker.Blobs()...) {
			if !have[b.Digest] {
				t.Errorf("containerd lacks %s after the pull", b.Digest)
			}
		}
		checkPulledThroughMirror(t, m.up, append(small.Blobs(), docker.Blobs()...))
		reqs := m.up.Requests(t)
		for _, b := range small.Layers {
			// Containerd lacked the layer, so dregistry fetched it upstream once.
			if n := testenv.BlobSends(reqs, b.Digest, b.Size); n != 1 {
				t.Errorf("upstream sent layer %s %d times, want once (by dregistry)", b.Digest, n)
			}
		}
	})

	t.Run("an image pulled in the k8s.io namespace is served from containerd too", func(t *testing.T) {
		k8s := testenv.PushImage(t, m.up, "e2e/k8s", "v1", 100<<10)
		m.node.PullIn(t, "k8s.io", k8s.Ref)
		m.up.Stop(t)
		defer m.up.Start(t)
		checkServedFromContainerd(t, m, k8s, true)
	})

	t.Run("a multi-platform index pulls through the mirror for every platform", func(t *testing.T) {
		m.node.Pull(t, multi.Ref, "--all-platforms")
		have := contentDigests(t, m.node)
		if !have[multi.Manifest.Digest] {
			t.Errorf("containerd lacks the index %s", multi.Manifest.Digest)
		}
		var blobs []testenv.Blob
		for _, img := range multi.Images {
			blobs = append(blobs, img.Manifest)
			blobs = append(blobs, img.Blobs()...)
		}
		for _, b := range blobs {
			if !have[b.Digest] {
				t.Errorf("containerd lacks %s (%s) after the pull", b.Digest, b.MediaType)
			}
		}
		checkPulledThroughMirror(t, m.up, blobs)
	})

	t.Run("skopeo copies the image through the mirror, which defaults to its upstream", func(t *testing.T) {
		skopeo := testenv.RequireBinary(t, "skopeo")
		dir := filepath.Join(t.TempDir(), "layout")
		src := "docker://" + m.node.HTTPAddr + "/e2e/small:v1"
		out, err := exec.Command(skopeo, "--insecure-policy", "--command-timeout", "2m",
			"copy", "--src-tls-verify=false", src, "oci:"+dir+":v1").CombinedOutput()
		if err != nil {
			t.Fatalf("skopeo copy %s: %v\n%s", src, err, out)
		}
		var index ocispec.Index
		raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &index); err != nil {
			t.Fatal(err)
		}
		if len(index.Manifests) != 1 || index.Manifests[0].Digest != small.Manifest.Digest {
			t.Fatalf("skopeo's layout holds %+v, want the manifest %s", index.Manifests, small.Manifest.Digest)
		}
		for _, b := range append([]testenv.Blob{small.Manifest}, small.Blobs()...) {
			body, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", b.Digest.Encoded()))
			if err != nil {
				t.Errorf("skopeo did not store %s: %v", b.Digest, err)
				continue
			}
			checkDigest(t, "skopeo's copy of "+b.Digest.String(), body, b.Digest)
		}
	})

	t.Run("blobs honour Range with 206 and an exact Content-Range, and 416 past the end", func(t *testing.T) {
		layer := small.Layers[1]
		full := do(t, http.MethodGet, m.url(small.Repo, "blobs/"+layer.Digest.String(), true))
		if full.Status != http.StatusOK {
			t.Fatalf("GET layer: %d", full.Status)
		}
		checkDigest(t, "layer", full.Body, layer.Digest)
		checkRanges(t, m.url(small.Repo, "blobs/"+layer.Digest.String(), true), full.Body)

		// A blob containerd does not hold streams from the upstream: Range
		// must work there too.
		cold := testenv.PushImage(t, m.up, "e2e/cold", "v1", 1<<20)
		coldLayer := cold.Layers[0]
		coldURL := m.url(cold.Repo, "blobs/"+coldLayer.Digest.String(), true)
		r := do(t, http.MethodGet, coldURL, "Range: bytes=1000-")
		if r.Status != http.StatusPartialContent {
			t.Fatalf("Range on a blob streamed from the upstream: %d, want 206", r.Status)
		}
		checkHeader(t, "cold range", r, "Content-Range", fmt.Sprintf("bytes 1000-%d/%d", coldLayer.Size-1, coldLayer.Size))
		whole := do(t, http.MethodGet, coldURL)
		checkDigest(t, "cold layer", whole.Body, coldLayer.Digest)
		if !bytes.Equal(r.Body, whole.Body[1000:]) {
			t.Errorf("cold range body differs from bytes 1000- of the blob")
		}
	})

	t.Run("an upstream that dies mid-blob aborts the response, and containerd's Range retry completes it", func(t *testing.T) {
		big := testenv.PushImage(t, m.up, "e2e/midblob", "v1", 64<<20)
		layer := big.Layers[0]
		url := m.url(big.Repo, "blobs/"+layer.Digest.String(), true)
		got, err := readThenKill(t, url, 1<<20, func() { m.up.Kill(t) })
		m.up.Start(t)
		if err == nil || int64(len(got)) >= layer.Size {
			t.Fatalf("the response ended cleanly after %d of %d bytes (err %v); a cut upstream must abort it", len(got), layer.Size, err)
		}
		// What arrived is a true prefix; the rest comes with Range, as containerd asks.
		rest := do(t, http.MethodGet, url, fmt.Sprintf("Range: bytes=%d-", len(got)))
		if rest.Status != http.StatusPartialContent {
			t.Fatalf("Range retry from %d: status %d, want 206", len(got), rest.Status)
		}
		checkHeader(t, "Range retry", rest, "Content-Range", fmt.Sprintf("bytes %d-%d/%d", len(got), layer.Size-1, layer.Size))
		checkDigest(t, "aborted prefix + Range retry", append(got, rest.Body...), layer.Digest)
	})

	t.Run("bad input gets its OCI error and the daemon keeps serving", func(t *testing.T) {
		checkBadInput(t, m, small)
	})

	t.Run("with the upstream stopped, tag, manifest and blobs are served from containerd with exact headers", func(t *testing.T) {
		m.up.Stop(t)
		defer m.up.Start(t)
		before := len(m.node.Served(t))
		for _, ns := range []bool{true, false} {
			checkServedFromContainerd(t, m, small, ns)
		}
		for _, s := range m.node.Served(t)[before:] {
			// A tag may also be answered by the egress's last known
			// descriptor (this node is its own egress); every byte of
			// content must come from containerd.
			tagFromEgress := s.Source == "egress" && s.Method == http.MethodHead && strings.HasSuffix(s.Path, "/manifests/"+small.Tag)
			if s.Status == http.StatusOK && s.Source != "containerd" && !tagFromEgress {
				t.Errorf("%s %s was served from %q, want containerd", s.Method, s.Path, s.Source)
			}
		}
		idx := do(t, http.MethodGet, m.url(multi.Repo, "manifests/"+multi.Tag, true), "Accept: "+manifestAccept)
		if idx.Status != http.StatusOK || !bytes.Equal(idx.Body, multi.IndexBytes) {
			t.Errorf("GET index by tag with the upstream stopped: %d, %d bytes", idx.Status, len(idx.Body))
		}
		checkHeader(t, "index", idx, "Content-Type", ocispec.MediaTypeImageIndex)
		checkHeader(t, "index", idx, "Docker-Content-Digest", multi.Manifest.Digest.String())
	})

	t.Run("a hung upstream costs at most the lookup timeout: unknown content 404s, known content answers from containerd", func(t *testing.T) {
		m.up.Pause(t)
		defer m.up.Resume(t)
		unknown := digest.FromString("dregistry e2e: never pushed")
		for _, c := range []struct {
			method, path string
			status       int
		}{
			{http.MethodGet, "blobs/" + unknown.String(), http.StatusNotFound},
			{http.MethodHead, "manifests/" + unknown.String(), http.StatusNotFound},
			{http.MethodHead, "manifests/no-such-tag", http.StatusNotFound},
			{http.MethodHead, "manifests/" + small.Tag, http.StatusOK},
			{http.MethodGet, "blobs/" + small.Layers[0].Digest.String(), http.StatusOK},
		} {
			// do's own timeout (requestTimeout) fails the test if the daemon hangs.
			r := do(t, c.method, m.url(small.Repo, c.path, true), "Accept: "+manifestAccept)
			if r.Status != c.status {
				t.Errorf("%s %s with the upstream hung: %d, want %d", c.method, c.path, r.Status, c.status)
			}
		}
	})

	t.Run("dregistry restarted serves again without intervention", func(t *testing.T) {
		m.up.Stop(t)
		defer m.up.Start(t)
		m.node.Restart(t)
		waitServed(t, m, small)
		checkServedFromContainerd(t, m, small, true)
	})

	t.Run("containerd restarted under dregistry is served again without intervention", func(t *testing.T) {
		m.up.Stop(t)
		defer m.up.Start(t)
		m.node.RestartContainerd(t)
		waitServed(t, m, small)
		checkServedFromContainerd(t, m, small, true)
	})

	t.Run("after both restarts a new image still pulls through the mirror", func(t *testing.T) {
		fresh := testenv.PushImage(t, m.up, "e2e/fresh", "v1", 500<<10)
		m.node.Pull(t, fresh.Ref)
		checkPulledThroughMirror(t, m.up, fresh.Blobs())
		if n := testenv.BlobSends(m.up.Requests(t), fresh.Layers[0].Digest, fresh.Layers[0].Size); n != 1 {
			t.Errorf("upstream sent the new layer %d times, want once (by dregistry)", n)
		}
	})
}

// readThenKill reads first bytes of url's body, calls kill, then reads on
// until the body ends; it returns what arrived and how the body ended.
func readThenKill(t *testing.T, url string, first int, kill func()) ([]byte, error) {
	t.Helper()
	resp, cancel, err := open(http.MethodGet, url)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	got := make([]byte, first)
	if _, err := io.ReadFull(resp.Body, got); err != nil {
		t.Fatalf("GET %s: first %d bytes: %v", url, first, err)
	}
	kill()
	rest, err := io.ReadAll(resp.Body)
	return append(got, rest...), err
}

// checkRanges asserts the Range behaviour of one blob whose bytes are full.
func checkRanges(t *testing.T, url string, full []byte) {
	t.Helper()
	size := int64(len(full))
	cases := []struct {
		header     string
		start, end int64 // inclusive
	}{
		{"bytes=10-99", 10, 99},
		{"bytes=0-0", 0, 0},
		{"bytes=1000-", 1000, size - 1},
		{"bytes=-10", size - 10, size - 1},
		{fmt.Sprintf("bytes=%d-%d", size-5, size+100), size - 5, size - 1},
	}
	for _, c := range cases {
		r := do(t, http.MethodGet, url, "Range: "+c.header)
		if r.Status != http.StatusPartialContent {
			t.Errorf("Range %s: status %d, want 206", c.header, r.Status)
			continue
		}
		checkHeader(t, "Range "+c.header, r, "Content-Range", fmt.Sprintf("bytes %d-%d/%d", c.start, c.end, size))
		checkHeader(t, "Range "+c.header, r, "Content-Length", strconv.FormatInt(c.end-c.start+1, 10))
		if !bytes.Equal(r.Body, full[c.start:c.end+1]) {
			t.Errorf("Range %s: body is not bytes %d-%d of the blob", c.header, c.start, c.end)
		}
	}
	for _, h := range []string{fmt.Sprintf("bytes=%d-", size), fmt.Sprintf("bytes=%d-%d", size+10, size+20)} {
		r := do(t, http.MethodGet, url, "Range: "+h)
		if r.Status != http.StatusRequestedRangeNotSatisfiable {
			t.Errorf("Range %s: status %d, want 416", h, r.Status)
			continue
		}
		checkHeader(t, "Range "+h, r, "Content-Range", fmt.Sprintf("bytes */%d", size))
	}
}

// checkBadInput sends every kind of bad request and checks after each that
// the daemon still serves a blob.
func checkBadInput(t *testing.T, m mirror, img testenv.Image) {
	t.Helper()
	base := m.node.URL() + "/v2/"
	repo := img.Repo
	layer := img.Layers[0]
	unknown := digest.FromString("dregistry e2e: no such blob")
	cases := []struct {
		name    string
		method  string
		url     string
		headers []string
		status  int
		code    string
	}{
		{"upper-case repository name", "GET", base + "E2E/Small/manifests/v1", nil, 400, "NAME_INVALID"},
		{"repository name with a double slash", "GET", base + "e2e//small/blobs/" + layer.Digest.String(), nil, 400, "NAME_INVALID"},
		{"repository name of 300 bytes", "GET", base + strings.Repeat("a", 300) + "/manifests/v1", nil, 400, "NAME_INVALID"},
		{"malformed ns registry", "GET", base + repo + "/manifests/v1?ns=bad_host!", nil, 400, "NAME_INVALID"},
		{"tag with a bad character", "GET", base + repo + "/manifests/v1!", nil, 400, "MANIFEST_INVALID"},
		{"tag of 200 bytes", "HEAD", base + repo + "/manifests/" + strings.Repeat("t", 200), nil, 400, ""},
		{"manifest digest of the wrong length", "GET", base + repo + "/manifests/sha256:1234", nil, 400, "DIGEST_INVALID"},
		{"manifest digest with an unknown algorithm", "GET", base + repo + "/manifests/md5:d41d8cd98f00b204e9800998ecf8427e", nil, 400, "DIGEST_INVALID"},
		{"blob digest that is not hex", "GET", base + repo + "/blobs/sha256:" + strings.Repeat("z", 64), nil, 400, "DIGEST_INVALID"},
		{"blob digest in upper case", "GET", base + repo + "/blobs/" + strings.ToUpper(layer.Digest.String()), nil, 400, "DIGEST_INVALID"},
		{"unknown blob", "GET", base + repo + "/blobs/" + unknown.String(), nil, 404, "BLOB_UNKNOWN"},
		{"unknown blob, HEAD", "HEAD", base + repo + "/blobs/" + unknown.String(), nil, 404, ""},
		{"unknown manifest digest", "GET", base + repo + "/manifests/" + unknown.String(), nil, 404, "MANIFEST_UNKNOWN"},
		{"unknown tag", "GET", base + repo + "/manifests/no-such-tag", nil, 404, "MANIFEST_UNKNOWN"},
		{"unknown repository", "GET", base + "e2e/nothing-here/manifests/v1", nil, 404, "MANIFEST_UNKNOWN"},
		{"manifest push", "PUT", base + repo + "/manifests/v2", nil, 405, "UNSUPPORTED"},
		{"blob upload", "POST", base + repo + "/blobs/uploads/", nil, 405, "UNSUPPORTED"},
		{"blob upload chunk", "PATCH", base + repo + "/blobs/uploads/0000", nil, 405, "UNSUPPORTED"},
		{"manifest delete", "DELETE", base + repo + "/manifests/" + img.Manifest.Digest.String(), nil, 405, "UNSUPPORTED"},
		{"blob delete", "DELETE", base + repo + "/blobs/" + layer.Digest.String(), nil, 405, "UNSUPPORTED"},
		{"Range past the end", "GET", base + repo + "/blobs/" + layer.Digest.String(), []string{fmt.Sprintf("Range: bytes=%d-", layer.Size)}, 416, ""},
		// RFC 9110 lets a server ignore a Range it cannot read: the whole blob.
		{"Range that is not a byte range", "GET", base + repo + "/blobs/" + layer.Digest.String(), []string{"Range: bytes=abc"}, 200, ""},
		{"Range in another unit", "GET", base + repo + "/blobs/" + layer.Digest.String(), []string{"Range: items=0-10"}, 200, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := do(t, c.method, c.url, c.headers...)
			if r.Status != c.status {
				t.Errorf("%s %s: status %d, want %d (body %.200s)", c.method, c.url, r.Status, c.status, r.Body)
			}
			if c.code != "" {
				if got := errorCode(r.Body); got != c.code {
					t.Errorf("%s %s: OCI error code %q, want %q (body %.200s)", c.method, c.url, got, c.code, r.Body)
				}
				checkHeader(t, c.name, r, "Content-Type", "application/json")
			}
			if c.status == http.StatusOK && c.method == http.MethodGet {
				checkDigest(t, c.name, r.Body, layer.Digest)
			}
			if r.Status == http.StatusUnauthorized {
				t.Errorf("%s: 401 would make containerd send the user's credentials", c.name)
			}
			after := do(t, http.MethodGet, base+repo+"/blobs/"+layer.Digest.String())
			if after.Status != http.StatusOK {
				t.Fatalf("after %s the daemon answers %d for a known blob", c.name, after.Status)
			}
			checkDigest(t, "known blob after "+c.name, after.Body, layer.Digest)
		})
	}
}

// checkServedFromContainerd asserts exact answers for the tag, the manifest
// and every blob of img, asked as containerd asks (with ns) or without.
func checkServedFromContainerd(t *testing.T, m mirror, img testenv.Image, ns bool) {
	t.Helper()
	how := fmt.Sprintf("ns=%v", ns)
	for _, ref := range []string{img.Tag, img.Manifest.Digest.String()} {
		u := m.url(img.Repo, "manifests/"+ref, ns)
		for _, method := range []string{http.MethodHead, http.MethodGet} {
			r := do(t, method, u, "Accept: "+manifestAccept)
			what := fmt.Sprintf("%s manifest %s (%s)", method, ref, how)
			if r.Status != http.StatusOK {
				t.Errorf("%s: status %d, body %.200s", what, r.Status, r.Body)
				continue
			}
			checkHeader(t, what, r, "Content-Type", img.Manifest.MediaType)
			checkHeader(t, what, r, "Content-Length", strconv.FormatInt(img.Manifest.Size, 10))
			checkHeader(t, what, r, "Docker-Content-Digest", img.Manifest.Digest.String())
			if method == http.MethodGet && !bytes.Equal(r.Body, img.ManifestBytes) {
				t.Errorf("%s: body differs from the pushed manifest", what)
			}
			if method == http.MethodHead && len(r.Body) != 0 {
				t.Errorf("%s: HEAD has a body of %d bytes", what, len(r.Body))
			}
		}
	}
	for _, b := range img.Blobs() {
		u := m.url(img.Repo, "blobs/"+b.Digest.String(), ns)
		for _, method := range []string{http.MethodHead, http.MethodGet} {
			r := do(t, method, u)
			what := fmt.Sprintf("%s blob %s (%s)", method, b.Digest, how)
			if r.Status != http.StatusOK {
				t.Errorf("%s: status %d", what, r.Status)
				continue
			}
			checkHeader(t, what, r, "Content-Length", strconv.FormatInt(b.Size, 10))
			checkHeader(t, what, r, "Docker-Content-Digest", b.Digest.String())
			if method == http.MethodGet {
				checkDigest(t, what, r.Body, b.Digest)
			}
		}
	}
}

// waitServed polls, bounded, until the daemon serves img's last layer again.
func waitServed(t *testing.T, m mirror, img testenv.Image) {
	t.Helper()
	layer := img.Layers[len(img.Layers)-1]
	u := m.url(img.Repo, "blobs/"+layer.Digest.String(), true)
	deadline := time.Now().Add(recoveryTimeout)
	last := 0
	for time.Now().Before(deadline) {
		r := do(t, http.MethodHead, u)
		if r.Status == http.StatusOK {
			return
		}
		last = r.Status
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("the daemon did not serve %s within %s (last status %d)", layer.Digest, recoveryTimeout, last)
}
