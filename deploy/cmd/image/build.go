package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// DefaultCABundle is Debian's CA bundle (package ca-certificates).
const DefaultCABundle = "/etc/ssl/certs/ca-certificates.crt"

// Binary is one platform's static dregistry binary.
type Binary struct {
	Platform v1.Platform
	Path     string
}

// Config says what to build and where it goes.
type Config struct {
	Binaries []Binary // at least one, one per platform
	Version  string   // required
	Revision string   // optional label
	Created  time.Time
	// CABundle is copied into the image; empty leaves it out.
	CABundle string
	// LayoutDir and Push: at least one. Insecure allows plain HTTP to Push.
	LayoutDir string
	Push      string
	Insecure  bool
}

func (c Config) check() error {
	if len(c.Binaries) == 0 {
		return errors.New("no -binary given")
	}
	if c.Version == "" {
		return errors.New("-version is required")
	}
	if c.LayoutDir == "" && c.Push == "" {
		return errors.New("nowhere to put the image: give -oci-layout and/or -push")
	}
	seen := map[string]bool{}
	for _, b := range c.Binaries {
		if seen[b.Platform.String()] {
			return fmt.Errorf("two binaries for %s", b.Platform)
		}
		seen[b.Platform.String()] = true
		if err := checkBinary(b.Path, b.Platform); err != nil {
			return err
		}
	}
	if c.LayoutDir != "" {
		if entries, err := os.ReadDir(c.LayoutDir); err == nil && len(entries) > 0 {
			return fmt.Errorf("-oci-layout %s exists and is not empty", c.LayoutDir)
		}
	}
	return nil
}

// Build checks every input, then writes and/or pushes the image index and
// returns its digest. Nothing is written when an input is wrong.
func Build(ctx context.Context, cfg Config) (v1.Hash, error) {
	if err := cfg.check(); err != nil {
		return v1.Hash{}, err
	}
	var ref name.Reference
	if cfg.Push != "" {
		var opts []name.Option
		if cfg.Insecure {
			opts = append(opts, name.Insecure)
		}
		var err error
		if ref, err = name.ParseReference(cfg.Push, opts...); err != nil {
			return v1.Hash{}, fmt.Errorf("-push: %w", err)
		}
	}
	idx, err := index(cfg)
	if err != nil {
		return v1.Hash{}, err
	}
	if cfg.LayoutDir != "" {
		p, err := layout.Write(cfg.LayoutDir, empty.Index)
		if err != nil {
			return v1.Hash{}, fmt.Errorf("oci layout: %w", err)
		}
		if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": cfg.Version})); err != nil {
			return v1.Hash{}, fmt.Errorf("oci layout: %w", err)
		}
	}
	if ref != nil {
		if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
		}
	}
	return idx.Digest()
}

// index is the OCI image index over one image per binary.
func index(cfg Config) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var adds []mutate.IndexAddendum
	for _, b := range cfg.Binaries {
		img, err := image(cfg, b)
		if err != nil {
			return nil, err
		}
		p := b.Platform
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	return mutate.AppendManifests(idx, adds...), nil
}

func image(cfg Config, b Binary) (v1.Image, error) {
	tarBytes, err := layerTar(b.Path, cfg.CABundle)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarBytes)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer for %s: %w", b.Platform, err)
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		return nil, fmt.Errorf("layer for %s: %w", b.Platform, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = b.Platform.OS, b.Platform.Architecture, b.Platform.Variant
	created := cfg.Created
	if created.IsZero() {
		created = time.Unix(0, 0).UTC() // reproducible, as ko and others do
	}
	cf.Created = v1.Time{Time: created}
	cf.Config.Entrypoint = []string{"/" + binaryPath}
	cf.Config.Cmd = []string{"daemon"}
	cf.Config.User = nonRootUser
	cf.Config.WorkingDir = "/"
	cf.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	cf.Config.Labels = labels(cfg)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("config for %s: %w", b.Platform, err)
	}
	return mutate.Annotations(img, labels(cfg)).(v1.Image), nil
}

// labels are the org.opencontainers.image.* annotations, on the config
// (what `ctr`/`docker inspect` show) and on each manifest.
func labels(cfg Config) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":       "dregistry",
		"org.opencontainers.image.description": "Peer-to-peer container image distribution for containerd",
		"org.opencontainers.image.source":      "https://github.com/dregistry/dregistry",
		"org.opencontainers.image.url":         "https://github.com/dregistry/dregistry",
		"org.opencontainers.image.version":     cfg.Version,
	}
	if cfg.Revision != "" {
		l["org.opencontainers.image.revision"] = cfg.Revision
	}
	if !cfg.Created.IsZero() {
		l["org.opencontainers.image.created"] = cfg.Created.UTC().Format(time.RFC3339)
	}
	return l
}
