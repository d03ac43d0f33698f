package testenv

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func get(t *testing.T, method, url, accept, agent string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	req.Header.Set("User-Agent", agent)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestRegistryServesPushedImageAndLogsEveryRequest(t *testing.T) {
	if testing.Short() {
		t.Skip("starts docker-registry")
	}
	reg := StartRegistry(t, LoopbackIP(2)+":5500")
	img := PushImage(t, reg, "testenv/small", "v1", 1000, 5000)

	resp, body := get(t, http.MethodGet, reg.URL()+"/v2/testenv/small/manifests/v1", ocispec.MediaTypeImageManifest, "containerd/1.6.20")
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, img.ManifestBytes) {
		t.Fatalf("manifest: %s, %d bytes; want the pushed %d bytes", resp.Status, len(body), len(img.ManifestBytes))
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	if m.MediaType != ocispec.MediaTypeImageManifest || m.Config.MediaType != ocispec.MediaTypeImageConfig ||
		len(m.Layers) != 2 || m.Layers[0].MediaType != ocispec.MediaTypeImageLayerGzip {
		t.Fatalf("manifest media types: %+v", m)
	}
	var cfg ocispec.Image
	_, cfgBody := get(t, http.MethodGet, reg.URL()+"/v2/testenv/small/blobs/"+img.Config.Digest.String(), "", "test")
	if err := json.Unmarshal(cfgBody, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" || len(cfg.RootFS.DiffIDs) != 2 {
		t.Fatalf("config: os %q arch %q diff ids %v", cfg.OS, cfg.Architecture, cfg.RootFS.DiffIDs)
	}

	layer := img.Layers[1]
	for i := 0; i < 2; i++ {
		resp, body := get(t, http.MethodGet, reg.URL()+"/v2/testenv/small/blobs/"+layer.Digest.String(), "", "test")
		if resp.StatusCode != http.StatusOK || digest.Digest("sha256:"+hexSum(body)) != layer.Digest {
			t.Fatalf("layer GET %d: %s", i, resp.Status)
		}
	}
	reqs := reg.Requests(t)
	if n := BlobSends(reqs, layer.Digest, layer.Size); n != 2 {
		t.Errorf("BlobSends(layer) = %d, want 2; requests: %+v", n, reqs)
	}
	if n := len(FromContainerd(reqs)); n != 1 {
		t.Errorf("requests with a containerd user agent: %d, want 1", n)
	}

	reg.Stop(t)
	if after := reg.Requests(t); len(after) != len(reqs) {
		t.Errorf("a stopped registry's log changed: %d requests, then %d", len(reqs), len(after))
	}
	reg.Start(t)
	if resp, _ := get(t, http.MethodHead, reg.URL()+"/v2/testenv/small/blobs/"+layer.Digest.String(), "", "test"); resp.StatusCode != http.StatusOK {
		t.Errorf("after restart the blob is %s", resp.Status)
	}
}

func TestPushIndexPushesOneImagePerPlatform(t *testing.T) {
	if testing.Short() {
		t.Skip("starts docker-registry")
	}
	reg := StartRegistry(t, LoopbackIP(3)+":5500")
	idx := PushIndex(t, reg, "testenv/multi", "v1", []string{"linux/amd64", "linux/arm64"}, 2000)
	resp, body := get(t, http.MethodGet, reg.URL()+"/v2/testenv/multi/manifests/v1", ocispec.MediaTypeImageIndex, "test")
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, idx.IndexBytes) {
		t.Fatalf("index: %s", resp.Status)
	}
	var ix ocispec.Index
	if err := json.Unmarshal(body, &ix); err != nil {
		t.Fatal(err)
	}
	if len(ix.Manifests) != 2 || ix.Manifests[1].Platform == nil || ix.Manifests[1].Platform.Architecture != "arm64" {
		t.Fatalf("index manifests: %+v", ix.Manifests)
	}
	if idx.Images[0].Layers[0].Digest == idx.Images[1].Layers[0].Digest {
		t.Errorf("platforms share a layer; each must have its own random layers")
	}
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return digest.NewDigestFromBytes(digest.SHA256, s[:]).Encoded()
}
