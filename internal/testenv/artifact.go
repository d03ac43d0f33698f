package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ArtifactSpec describes an OCI artifact to generate and push as ORAS does
// (`oras push --artifact-type T REF file:MEDIATYPE`): an image manifest with
// an artifactType, the empty config and one layer, the file as it is.
type ArtifactSpec struct {
	Repo, Tag    string
	ArtifactType string // e.g. "application/vnd.example.model.v1"
	// LayerMediaType is the file's media type, e.g.
	// "application/vnd.example.model.weights.v1.tar".
	LayerMediaType string
	// LayerSize is the file's size; its bytes are ChaCha8's stream of Seed,
	// generated as they are uploaded (never held in memory or on disk).
	LayerSize int64
	Seed      uint64
	// Title is the file name (the org.opencontainers.image.title
	// annotation); default "weights.bin".
	Title string
}

// emptyJSON is the empty config of an artifact (OCI image-spec 1.1).
var emptyJSON = []byte("{}")

// PushArtifact pushes the artifact spec describes and returns it in the
// shape of an Image (Config is the empty descriptor, Layers the file). The
// layer is generated while it streams to the registry in one PATCH, its
// sha256 computed on the way, so a multi-GiB layer costs neither memory
// nor disk beyond the registry's own copy.
func (r *Registry) PushArtifact(t testing.TB, spec ArtifactSpec) Image {
	t.Helper()
	if spec.Title == "" {
		spec.Title = "weights.bin"
	}
	if spec.Repo == "" || spec.Tag == "" || spec.ArtifactType == "" || spec.LayerMediaType == "" || spec.LayerSize <= 0 {
		t.Fatalf("testenv: artifact spec %+v: need repo, tag, artifact type, layer media type and a positive size", spec)
	}
	ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
	defer cancel()
	client := &http.Client{Timeout: pushTimeout}
	cfg := Blob{Digest: digest.FromBytes(emptyJSON), Size: int64(len(emptyJSON)), MediaType: ocispec.MediaTypeEmptyJSON}
	if err := r.upload(ctx, client, spec.Repo, cfg.Size, strings.NewReader(string(emptyJSON)), sha256.New()); err != nil {
		t.Fatalf("testenv: push the empty config to %s: %v", spec.Repo, err)
	}
	h := sha256.New()
	gen := io.LimitReader(rand.NewChaCha8(chachaSeed(spec.Seed)), spec.LayerSize)
	if err := r.upload(ctx, client, spec.Repo, spec.LayerSize, gen, h); err != nil {
		t.Fatalf("testenv: push the %d-byte layer to %s: %v", spec.LayerSize, spec.Repo, err)
	}
	layer := Blob{Digest: digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)), Size: spec.LayerSize, MediaType: spec.LayerMediaType}

	m := ocispec.Manifest{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: spec.ArtifactType,
		Config:       ocispec.DescriptorEmptyJSON,
		Layers: []ocispec.Descriptor{{
			MediaType: layer.MediaType, Digest: layer.Digest, Size: layer.Size,
			Annotations: map[string]string{ocispec.AnnotationTitle: spec.Title},
		}},
	}
	m.SchemaVersion = 2
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("testenv: artifact manifest: %v", err)
	}
	if err := r.putManifest(ctx, client, spec.Repo, spec.Tag, raw); err != nil {
		t.Fatalf("testenv: push the manifest of %s:%s: %v", spec.Repo, spec.Tag, err)
	}
	return Image{
		Ref: r.Addr + "/" + spec.Repo + ":" + spec.Tag, Registry: r.Addr, Repo: spec.Repo, Tag: spec.Tag,
		Manifest:      Blob{Digest: digest.FromBytes(raw), Size: int64(len(raw)), MediaType: ocispec.MediaTypeImageManifest},
		Config:        cfg,
		Layers:        []Blob{layer},
		ManifestBytes: raw,
	}
}

// chachaSeed spreads a test's seed over ChaCha8's 32-byte key.
func chachaSeed(seed uint64) [32]byte {
	var k [32]byte
	for i := range 4 {
		binary.LittleEndian.PutUint64(k[8*i:], seed+uint64(i)*0x9e3779b97f4a7c15)
	}
	return k
}

// upload pushes size bytes of body as one blob of repo (POST, one PATCH,
// PUT ?digest=), hashing them into h on the way; the digest is h's sum.
func (r *Registry) upload(ctx context.Context, client *http.Client, repo string, size int64, body io.Reader, h hash.Hash) error {
	loc, err := r.uploadStep(ctx, client, http.MethodPost, r.URL()+"/v2/"+repo+"/blobs/uploads/", nil, 0, http.StatusAccepted)
	if err != nil {
		return err
	}
	if loc, err = r.uploadStep(ctx, client, http.MethodPatch, loc, io.TeeReader(body, h), size, http.StatusAccepted); err != nil {
		return err
	}
	u, err := url.Parse(loc)
	if err != nil {
		return fmt.Errorf("upload location %q: %w", loc, err)
	}
	q := u.Query()
	q.Set("digest", digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)).String())
	u.RawQuery = q.Encode()
	_, err = r.uploadStep(ctx, client, http.MethodPut, u.String(), nil, 0, http.StatusCreated)
	return err
}

// uploadStep sends one request of an upload and returns the Location the
// registry answers, resolved against the registry's URL.
func (r *Registry) uploadStep(ctx context.Context, client *http.Client, method, loc string, body io.Reader, size int64, want int) (string, error) {
	req, err := http.NewRequestWithContext(ctx, method, loc, body)
	if err != nil {
		return "", err
	}
	req.ContentLength = size
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", method, loc, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return "", fmt.Errorf("%s %s: %s: %s", method, loc, resp.Status, strings.TrimSpace(string(msg)))
	}
	next, err := resp.Location()
	if err != nil {
		if method == http.MethodPut {
			return "", nil
		}
		return "", fmt.Errorf("%s %s: %w", method, loc, err)
	}
	return next.String(), nil
}

// putManifest pushes an OCI image manifest as repo:tag.
func (r *Registry) putManifest(ctx context.Context, client *http.Client, repo, tag string, raw []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, r.URL()+"/v2/"+repo+"/manifests/"+tag, strings.NewReader(string(raw)))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != digest.FromBytes(raw).String() {
		return fmt.Errorf("the registry names the manifest %s, its bytes are %s", got, digest.FromBytes(raw))
	}
	return nil
}
