package testenv

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// pushTimeout bounds one image push; a 1 GiB layer on loopback takes seconds.
const pushTimeout = 5 * time.Minute

// Format is the manifest flavour of a generated image.
type Format int

const (
	// OCI: OCI manifest, config and layer media types (the default).
	OCI Format = iota
	// Docker: Docker schema 2 manifest, config and layer media types.
	Docker
)

// ImageSpec describes an image to generate and push.
type ImageSpec struct {
	Repo string // repository, e.g. "e2e/small"
	Tag  string
	// LayerSizes are the sizes of the random file in each layer; each layer
	// blob is a tar holding one such file (plus tar framing).
	LayerSizes []int64
	Format     Format
	// Uncompressed stores layers as plain tar: random bytes do not compress,
	// and gzipping a large layer would cost the test more than the pull.
	Uncompressed bool
	// Platform is OS/architecture of the config; default linux/amd64.
	Platform v1.Platform
}

// Blob is one pushed blob.
type Blob struct {
	Digest    digest.Digest
	Size      int64
	MediaType string
}

// Image is a pushed image and every digest a test may ask for.
type Image struct {
	Ref       string // registry/repo:tag, as ctr and skopeo take it
	Registry  string // host:port
	Repo, Tag string
	Manifest  Blob // the manifest itself
	Config    Blob
	Layers    []Blob
	// ManifestBytes are the exact bytes the registry serves.
	ManifestBytes []byte
}

// Blobs returns the config and the layers.
func (img Image) Blobs() []Blob { return append([]Blob{img.Config}, img.Layers...) }

// Index is a pushed multi-platform index.
type Index struct {
	Ref        string
	Registry   string
	Repo, Tag  string
	Manifest   Blob // the index itself
	IndexBytes []byte
	Images     []Image // one per platform, in the order given
}

// PushImage generates a linux/amd64 image with one random layer per size
// (gzip OCI layers) and pushes it as reg/repo:tag.
func PushImage(t testing.TB, reg *Registry, repo, tag string, layerSizes ...int64) Image {
	t.Helper()
	return reg.Push(t, ImageSpec{Repo: repo, Tag: tag, LayerSizes: layerSizes})
}

// Push generates the image spec describes and pushes it.
func (r *Registry) Push(t testing.TB, spec ImageSpec) Image {
	t.Helper()
	img, err := generateImage(t.TempDir(), spec)
	if err != nil {
		t.Fatalf("testenv: generate image %s:%s: %v", spec.Repo, spec.Tag, err)
	}
	return r.pushImage(t, spec.Repo, spec.Tag, img)
}

// pushImage pushes img as r/repo:tag and describes what was pushed.
func (r *Registry) pushImage(t testing.TB, repo, tag string, img v1.Image) Image {
	t.Helper()
	ref, err := name.ParseReference(r.Addr+"/"+repo+":"+tag, name.Insecure, name.StrictValidation)
	if err != nil {
		t.Fatalf("testenv: image reference: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
	defer cancel()
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		t.Fatalf("testenv: push %s: %v", ref, err)
	}
	out, err := describeImage(img)
	if err != nil {
		t.Fatalf("testenv: describe %s: %v", ref, err)
	}
	out.Ref, out.Registry, out.Repo, out.Tag = ref.String(), r.Addr, repo, tag
	return out
}

// PushIndex pushes one image per platform ("linux/amd64", "linux/arm64"),
// each with its own random layers, and an OCI index of them as reg/repo:tag.
func PushIndex(t testing.TB, reg *Registry, repo, tag string, platforms []string, layerSizes ...int64) Index {
	t.Helper()
	if len(platforms) == 0 {
		t.Fatalf("testenv: PushIndex needs at least one platform")
	}
	ref, err := name.ParseReference(reg.Addr+"/"+repo+":"+tag, name.Insecure, name.StrictValidation)
	if err != nil {
		t.Fatalf("testenv: index reference: %v", err)
	}
	var (
		adds   []mutate.IndexAddendum
		images []Image
	)
	for _, p := range platforms {
		plat, err := v1.ParsePlatform(p)
		if err != nil {
			t.Fatalf("testenv: platform %q: %v", p, err)
		}
		img, err := generateImage(t.TempDir(), ImageSpec{LayerSizes: layerSizes, Platform: *plat})
		if err != nil {
			t.Fatalf("testenv: generate %s image: %v", p, err)
		}
		desc, err := describeImage(img)
		if err != nil {
			t.Fatalf("testenv: describe %s image: %v", p, err)
		}
		desc.Ref = reg.Addr + "/" + repo + "@" + desc.Manifest.Digest.String()
		desc.Registry, desc.Repo = reg.Addr, repo
		images = append(images, desc)
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: plat}})
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
	defer cancel()
	if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx)); err != nil {
		t.Fatalf("testenv: push index %s: %v", ref, err)
	}
	raw, err := idx.RawManifest()
	if err != nil {
		t.Fatalf("testenv: index manifest: %v", err)
	}
	return Index{
		Ref: ref.String(), Registry: reg.Addr, Repo: repo, Tag: tag,
		Manifest:   Blob{Digest: digest.FromBytes(raw), Size: int64(len(raw)), MediaType: string(types.OCIImageIndex)},
		IndexBytes: raw,
		Images:     images,
	}
}

// generateImage builds an image whose layers live as files under dir.
func generateImage(dir string, spec ImageSpec) (v1.Image, error) {
	if len(spec.LayerSizes) == 0 {
		return nil, fmt.Errorf("an image needs at least one layer")
	}
	plat := spec.Platform
	if plat.OS == "" {
		plat = v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	manifestType, configType := types.OCIManifestSchema1, types.OCIConfigJSON
	layerType := types.OCILayer
	if spec.Uncompressed {
		layerType = types.OCIUncompressedLayer
	}
	if spec.Format == Docker {
		manifestType, configType = types.DockerManifestSchema2, types.DockerConfigJSON
		layerType = types.DockerLayer
		if spec.Uncompressed {
			layerType = types.DockerUncompressedLayer
		}
	}
	cfg := &v1.ConfigFile{
		Architecture: plat.Architecture,
		OS:           plat.OS,
		Variant:      plat.Variant,
		Created:      v1.Time{Time: time.Now().UTC().Truncate(time.Second)},
		Config:       v1.Config{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, Cmd: []string{"/bin/true"}},
		RootFS:       v1.RootFS{Type: "layers"},
	}
	base, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	base = mutate.ConfigMediaType(mutate.MediaType(base, manifestType), configType)
	var adds []mutate.Addendum
	for i, size := range spec.LayerSizes {
		l, err := newFileLayer(filepath.Join(dir, fmt.Sprintf("layer%d", i)), size, layerType, !spec.Uncompressed)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		adds = append(adds, mutate.Addendum{Layer: l, MediaType: layerType, History: v1.History{
			CreatedBy: fmt.Sprintf("testenv: random layer %d of %d bytes", i, size),
			Created:   cfg.Created,
		}})
	}
	return mutate.Append(base, adds...)
}

// describeImage reads back what a test needs from a generated image.
func describeImage(img v1.Image) (Image, error) {
	raw, err := img.RawManifest()
	if err != nil {
		return Image{}, err
	}
	m, err := img.Manifest()
	if err != nil {
		return Image{}, err
	}
	out := Image{
		Manifest:      Blob{Digest: digest.FromBytes(raw), Size: int64(len(raw)), MediaType: string(m.MediaType)},
		Config:        Blob{Digest: digest.Digest(m.Config.Digest.String()), Size: m.Config.Size, MediaType: string(m.Config.MediaType)},
		ManifestBytes: raw,
	}
	for _, l := range m.Layers {
		out.Layers = append(out.Layers, Blob{Digest: digest.Digest(l.Digest.String()), Size: l.Size, MediaType: string(l.MediaType)})
	}
	return out, nil
}

// fileLayer is a layer blob kept in a file, so a 1 GiB layer costs disk,
// not memory, and its digests are computed once while it is written.
type fileLayer struct {
	blobPath  string
	tarPath   string
	digest    v1.Hash
	diffID    v1.Hash
	size      int64
	mediaType types.MediaType
}

// newFileLayer writes a tar holding one file of size random bytes to
// path+".tar" and, when compress is set, its gzip to path+".tar.gz".
func newFileLayer(path string, size int64, mt types.MediaType, compress bool) (*fileLayer, error) {
	l := &fileLayer{tarPath: path + ".tar", mediaType: mt}
	var seed [32]byte
	if _, err := crand.Read(seed[:]); err != nil {
		return nil, err
	}
	tarSum, _, err := writeFile(l.tarPath, func(w io.Writer) error {
		tw := tar.NewWriter(w)
		hdr := &tar.Header{
			Name: "random-" + hex.EncodeToString(seed[:6]), Size: size, Mode: 0o644,
			Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0),
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		// ChaCha8 is fast and its output does not compress.
		if _, err := io.CopyN(tw, rand.NewChaCha8(seed), size); err != nil {
			return err
		}
		return tw.Close()
	})
	if err != nil {
		return nil, err
	}
	l.diffID = tarSum
	l.blobPath, l.digest = l.tarPath, tarSum
	if !compress {
		st, err := os.Stat(l.tarPath)
		if err != nil {
			return nil, err
		}
		l.size = st.Size()
		return l, nil
	}
	l.blobPath = path + ".tar.gz"
	sum, n, err := writeFile(l.blobPath, func(w io.Writer) error {
		src, err := os.Open(l.tarPath)
		if err != nil {
			return err
		}
		defer src.Close()
		zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
		if err != nil {
			return err
		}
		if _, err := io.Copy(zw, src); err != nil {
			return err
		}
		return zw.Close()
	})
	if err != nil {
		return nil, err
	}
	l.digest, l.size = sum, n
	return l, nil
}

// writeFile creates path with what fill writes and returns its sha256 and size.
func writeFile(path string, fill func(io.Writer) error) (v1.Hash, int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return v1.Hash{}, 0, err
	}
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	cw := &countingWriter{w: bw}
	if err := fill(cw); err != nil {
		f.Close()
		return v1.Hash{}, 0, err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return v1.Hash{}, 0, err
	}
	if err := f.Close(); err != nil {
		return v1.Hash{}, 0, err
	}
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}, cw.n, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (l *fileLayer) Digest() (v1.Hash, error)             { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)             { return l.diffID, nil }
func (l *fileLayer) Size() (int64, error)                 { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error)  { return l.mediaType, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)   { return os.Open(l.blobPath) }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) { return os.Open(l.tarPath) }
func (l *fileLayer) String() string                       { return l.digest.String() }

var _ v1.Layer = (*fileLayer)(nil)
