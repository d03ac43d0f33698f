// Command image builds the dregistry container image without a container
// engine: one static dregistry binary per platform, at
// /usr/local/bin/dregistry, in an OCI image index written to an OCI layout
// directory and/or pushed to a registry (`make image` runs it).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

// binaryFlags collects repeated -binary os/arch[/variant]=path flags.
type binaryFlags []Binary

func (b *binaryFlags) String() string { return fmt.Sprint(*b) }

func (b *binaryFlags) Set(v string) error {
	platform, path, ok := strings.Cut(v, "=")
	if !ok || path == "" {
		return fmt.Errorf("want os/arch=path, got %q", v)
	}
	p, err := parsePlatform(platform)
	if err != nil {
		return err
	}
	*b = append(*b, Binary{Platform: p, Path: path})
	return nil
}

func main() {
	var cfg Config
	var bins binaryFlags
	var created string
	flag.Var(&bins, "binary", "os/arch=path of a static dregistry binary (repeat per platform)")
	flag.StringVar(&cfg.Version, "version", "", "image version: the org.opencontainers.image.version label and the layout's ref name (required)")
	flag.StringVar(&cfg.Revision, "revision", "", "source revision for the org.opencontainers.image.revision label")
	flag.StringVar(&created, "created", "", "RFC 3339 creation time (default: unset, so builds are reproducible)")
	flag.StringVar(&cfg.CABundle, "ca-bundle", DefaultCABundle, "CA certificates copied to /etc/ssl/certs/ca-certificates.crt (the daemon talks TLS to upstream registries); empty to leave out")
	flag.StringVar(&cfg.LayoutDir, "oci-layout", "", "write the image index into this OCI layout directory")
	flag.StringVar(&cfg.Push, "push", "", "push the image index to this reference (registry/repository:tag)")
	flag.BoolVar(&cfg.Insecure, "insecure", false, "allow plain HTTP to the -push registry")
	flag.Parse()
	cfg.Binaries = bins
	if created != "" {
		t, err := time.Parse(time.RFC3339, created)
		if err != nil {
			fail(fmt.Errorf("-created: %w", err))
		}
		cfg.Created = t
	}
	if flag.NArg() > 0 {
		fail(errors.New("unexpected arguments: " + strings.Join(flag.Args(), " ")))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	digest, err := Build(ctx, cfg)
	if err != nil {
		fail(err)
	}
	fmt.Println(digest)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "image:", err)
	os.Exit(1)
}
