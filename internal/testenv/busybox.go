package testenv

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	tarballlayer "github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BusyboxBinary is Debian's statically linked busybox (package busybox-static).
const BusyboxBinary = "/bin/busybox"

// PushBusybox builds a real, runnable image from Debian's static busybox
// (one gzip layer with /bin/busybox and applet links, plus a second layer
// of padding so the image has a large blob worth sharing) and pushes it
// as reg/repo:tag.
func PushBusybox(t testing.TB, reg *Registry, repo, tag string, paddingSize int64) Image {
	t.Helper()
	bin, err := os.ReadFile(BusyboxBinary)
	if err != nil {
		Unavailable(t, fmt.Sprintf("busybox-static is not installed (%v)", err))
	}
	img, err := busyboxImage(bin)
	if err != nil {
		t.Fatalf("testenv: busybox image: %v", err)
	}
	if paddingSize > 0 {
		pad, err := generateImage(t.TempDir(), ImageSpec{LayerSizes: []int64{paddingSize}, Uncompressed: true})
		if err != nil {
			t.Fatalf("testenv: padding layer: %v", err)
		}
		layers, err := pad.Layers()
		if err != nil {
			t.Fatalf("testenv: padding layer: %v", err)
		}
		if img, err = mutate.AppendLayers(img, layers...); err != nil {
			t.Fatalf("testenv: append padding layer: %v", err)
		}
	}
	return reg.pushImage(t, repo, tag, img)
}

func busyboxImage(bin []byte) (v1.Image, error) {
	var tarball bytes.Buffer
	zw := gzip.NewWriter(&tarball)
	tw := tar.NewWriter(zw)
	mtime := time.Unix(0, 0)
	entries := []*tar.Header{
		{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime},
		{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin)), ModTime: mtime},
	}
	for _, h := range entries {
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(bin); err != nil {
				return nil, err
			}
		}
	}
	// Each applet gets a symlink, so the image has a usable shell.
	for _, applet := range []string{"sh", "ls", "cat", "echo", "env", "uname", "wget", "sleep", "du", "df"} {
		h := &tar.Header{Name: "bin/" + applet, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777, ModTime: mtime}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	gz := tarball.Bytes()
	layer, err := tarballlayer.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz)), nil
	}, tarballlayer.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Config.Cmd = []string{"/bin/sh"}
	cfg.Config.Env = []string{"PATH=/bin"}
	return mutate.ConfigFile(img, cfg)
}
