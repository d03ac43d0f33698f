package testenv

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestPushArtifactAsORASWritesIt(t *testing.T) {
	if testing.Short() {
		t.Skip("starts docker-registry")
	}
	reg := StartRegistry(t, LoopbackIP(4)+":5500")
	spec := ArtifactSpec{
		Repo: "testenv/model", Tag: "v1", ArtifactType: "application/vnd.example.model.v1",
		LayerMediaType: "application/vnd.example.model.weights.v1.tar", LayerSize: 3<<20 + 7, Seed: 42,
	}
	art := reg.PushArtifact(t, spec)

	resp, body := get(t, http.MethodGet, reg.URL()+"/v2/testenv/model/manifests/v1", ocispec.MediaTypeImageManifest, "test")
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, art.ManifestBytes) || digest.FromBytes(body) != art.Manifest.Digest {
		t.Fatalf("manifest: %s, %d bytes; want the pushed %d bytes", resp.Status, len(body), len(art.ManifestBytes))
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	if m.MediaType != ocispec.MediaTypeImageManifest || m.ArtifactType != spec.ArtifactType ||
		m.Config.MediaType != ocispec.MediaTypeEmptyJSON || m.Config.Digest != art.Config.Digest || !bytes.Equal(m.Config.Data, []byte("{}")) ||
		len(m.Layers) != 1 || m.Layers[0].MediaType != spec.LayerMediaType || m.Layers[0].Annotations[ocispec.AnnotationTitle] != "weights.bin" {
		t.Fatalf("manifest: %s", body)
	}
	for _, b := range art.Blobs() {
		resp, body := get(t, http.MethodGet, reg.URL()+"/v2/testenv/model/blobs/"+b.Digest.String(), "", "test")
		if resp.StatusCode != http.StatusOK || int64(len(body)) != b.Size || digest.FromBytes(body) != b.Digest {
			t.Errorf("blob %s (%s): %s, %d bytes", b.Digest, b.MediaType, resp.Status, len(body))
		}
	}

	// The layer is a function of the seed: the same seed pushes the same
	// blob, another seed another.
	again := reg.PushArtifact(t, ArtifactSpec{Repo: "testenv/model", Tag: "v2", ArtifactType: spec.ArtifactType,
		LayerMediaType: spec.LayerMediaType, LayerSize: spec.LayerSize, Seed: 42})
	other := reg.PushArtifact(t, ArtifactSpec{Repo: "testenv/model", Tag: "v3", ArtifactType: spec.ArtifactType,
		LayerMediaType: spec.LayerMediaType, LayerSize: spec.LayerSize, Seed: 43})
	if again.Layers[0].Digest != art.Layers[0].Digest {
		t.Errorf("seed 42 gave %s, then %s", art.Layers[0].Digest, again.Layers[0].Digest)
	}
	if other.Layers[0].Digest == art.Layers[0].Digest {
		t.Errorf("seeds 42 and 43 gave the same layer %s", art.Layers[0].Digest)
	}
}
