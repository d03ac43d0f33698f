package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// tinyBinaries are small static Go programs, one per architecture: the
// builder packs binaries, it does not care which program they are.
var (
	tinyOnce sync.Once
	tinyDir  string
	tinyErr  error
)

func tinyBinary(t *testing.T, arch string) string {
	t.Helper()
	tinyOnce.Do(func() {
		tinyDir, tinyErr = os.MkdirTemp("", "dregistry-image-test-")
		if tinyErr != nil {
			return
		}
		src := filepath.Join(tinyDir, "main.go")
		if tinyErr = os.WriteFile(src, []byte("package main\n\nfunc main() { println(\"tiny\") }\n"), 0o644); tinyErr != nil {
			return
		}
		for _, a := range []string{"amd64", "arm64"} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(tinyDir, a), src)
			cmd.Dir = tinyDir
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+a, "GOFLAGS=")
			out, err := cmd.CombinedOutput()
			cancel()
			if err != nil {
				tinyErr = errors.New("go build " + a + ": " + err.Error() + ": " + string(out))
				return
			}
		}
	})
	if tinyErr != nil {
		t.Fatal(tinyErr)
	}
	return filepath.Join(tinyDir, arch)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if tinyDir != "" {
		os.RemoveAll(tinyDir)
	}
	os.Exit(code)
}

func platform(t *testing.T, s string) v1.Platform {
	t.Helper()
	p, err := parsePlatform(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBuildWritesAMultiPlatformLayout(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Binaries: []Binary{
			{Platform: platform(t, "linux/amd64"), Path: tinyBinary(t, "amd64")},
			{Platform: platform(t, "linux/arm64"), Path: tinyBinary(t, "arm64")},
		},
		Version: "1.2.3", Revision: "abc123", CABundle: ca,
		LayoutDir: filepath.Join(t.TempDir(), "layout"),
	}
	digest, err := Build(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}

	outer, err := layout.ImageIndexFromPath(cfg.LayoutDir)
	if err != nil {
		t.Fatal(err)
	}
	om, err := outer.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(om.Manifests) != 1 || om.Manifests[0].Digest != digest || om.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "1.2.3" {
		t.Fatalf("index.json: %+v, want the index %s named 1.2.3", om.Manifests, digest)
	}
	idx, err := outer.ImageIndex(digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 2 {
		t.Fatalf("index lists %d images, want 2", len(im.Manifests))
	}
	for i, want := range []struct{ arch, variant string }{{"amd64", ""}, {"arm64", "v8"}} {
		desc := im.Manifests[i]
		if desc.Platform == nil || desc.Platform.OS != "linux" || desc.Platform.Architecture != want.arch || desc.Platform.Variant != want.variant {
			t.Fatalf("manifest %d platform %+v, want linux/%s %s", i, desc.Platform, want.arch, want.variant)
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		c := cf.Config
		if cf.Architecture != want.arch || strings.Join(c.Entrypoint, " ") != "/usr/local/bin/dregistry" || strings.Join(c.Cmd, " ") != "daemon" ||
			c.User != "65532:65532" || c.Labels["org.opencontainers.image.version"] != "1.2.3" || c.Labels["org.opencontainers.image.revision"] != "abc123" ||
			c.Labels["org.opencontainers.image.source"] == "" {
			t.Fatalf("config of %s: %+v", want.arch, cf)
		}
		files := layerFiles(t, img)
		bin, err := os.ReadFile(tinyBinary(t, want.arch))
		if err != nil {
			t.Fatal(err)
		}
		if f := files["usr/local/bin/dregistry"]; f.mode != 0o755 || !bytes.Equal(f.content, bin) {
			t.Errorf("%s: /usr/local/bin/dregistry mode %o, %d bytes; want 0755 and the binary's %d bytes", want.arch, f.mode, len(f.content), len(bin))
		}
		if !strings.Contains(string(files["etc/ssl/certs/ca-certificates.crt"].content), "test") || !strings.Contains(string(files["etc/passwd"].content), "65532") {
			t.Errorf("%s: CA bundle or passwd missing: %v", want.arch, keys(files))
		}
	}

	// The same inputs give the same image.
	cfg.LayoutDir = filepath.Join(t.TempDir(), "again")
	if again, err := Build(context.Background(), cfg); err != nil || again != digest {
		t.Errorf("second build: %s, %v; want %s", again, err, digest)
	}
}

type tarFile struct {
	mode    int64
	content []byte
}

func layerFiles(t *testing.T, img v1.Image) map[string]tarFile {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v; want 1", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]tarFile{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = tarFile{mode: h.Mode, content: b}
	}
}

func keys(m map[string]tarFile) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Every bad input is refused with a clear error before anything is written.
func TestBuildRefusesBadInputAndWritesNothing(t *testing.T) {
	amd64, arm64 := tinyBinary(t, "amd64"), tinyBinary(t, "arm64")
	notELF := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	nonEmpty := t.TempDir()
	if err := os.WriteFile(filepath.Join(nonEmpty, "keep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	good := Binary{Platform: platform(t, "linux/amd64"), Path: amd64}
	for _, tc := range []struct {
		name   string
		mutate func(c *Config)
		want   string
	}{
		{"no binary", func(c *Config) { c.Binaries = nil }, "no -binary"},
		{"no version", func(c *Config) { c.Version = "" }, "-version"},
		{"no destination", func(c *Config) { c.LayoutDir = "" }, "nowhere"},
		{"wrong architecture", func(c *Config) { c.Binaries = []Binary{{Platform: platform(t, "linux/amd64"), Path: arm64}} }, "not linux/amd64"},
		{"twice one platform", func(c *Config) { c.Binaries = []Binary{good, good} }, "two binaries"},
		{"not an ELF file", func(c *Config) { c.Binaries = []Binary{{Platform: good.Platform, Path: notELF}} }, "binary for linux/amd64"},
		{"missing binary", func(c *Config) { c.Binaries = []Binary{{Platform: good.Platform, Path: notELF + ".gone"}} }, "no such file"},
		{"layout not empty", func(c *Config) { c.LayoutDir = nonEmpty }, "not empty"},
		{"bad push reference", func(c *Config) { c.Push = "UPPER CASE/ref" }, "-push"},
		{"missing CA bundle", func(c *Config) { c.CABundle = notELF + ".gone" }, "CA bundle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "layout")
			cfg := Config{Binaries: []Binary{good}, Version: "1", LayoutDir: dir, CABundle: ""}
			tc.mutate(&cfg)
			_, err := Build(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s was written (%v)", dir, err)
			}
		})
	}
}

func TestDynamicBinaryIsRefused(t *testing.T) {
	// /bin/sh is dynamically linked on Debian: it would find no loader in
	// the image.
	err := checkBinary("/bin/sh", platform(t, "linux/"+runtime.GOARCH))
	if err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Fatalf("error %v, want the dynamic-linking refusal", err)
	}
}

func TestParsePlatform(t *testing.T) {
	for in, want := range map[string]string{"linux/amd64": "linux/amd64", "linux/arm64": "linux/arm64/v8", "linux/arm64/v8": "linux/arm64/v8"} {
		if p, err := parsePlatform(in); err != nil || p.String() != want {
			t.Errorf("%s: %v, %v; want %s", in, p, err, want)
		}
	}
	for _, bad := range []string{"", "linux", "windows/amd64", "linux/riscv64", "linux/amd64/v2/x"} {
		if _, err := parsePlatform(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
