package swarm

import (
	"context"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The swarm serves manifests by digest like any blob and reads their media
// type from the content with the registry's sniffer: JSON that is no
// manifest, an image config above all (JSON without a mediaType), is never
// served as one.
func TestManifestTypeIsReadFromContent(t *testing.T) {
	tr := newTracker()
	a := startNode(t, tr, "127.0.0.2", "", nil)
	b := startNode(t, tr, "127.0.0.3", "", nil)
	for _, tc := range []struct {
		name, content string
		want          string // "" when it is no manifest
	}{
		{"image config without mediaType",
			`{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":[]}}`, ""},
		{"image config with its own mediaType",
			`{"mediaType":"application/vnd.oci.image.config.v1+json","architecture":"amd64","os":"linux"}`, ""},
		{"not JSON", "\x1f\x8b\x08 a gzip layer", ""},
		{"image manifest without mediaType",
			`{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:` + digest.FromString("c").Encoded() + `","size":1},"layers":[]}`,
			ocispec.MediaTypeImageManifest},
		{"index without mediaType", `{"schemaVersion":2,"manifests":[]}`, ocispec.MediaTypeImageIndex},
		{"docker manifest", `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{},"layers":[]}`,
			"application/vnd.docker.distribution.manifest.v2+json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			content := []byte(tc.content)
			dgst := digest.FromBytes(content)
			seed(t, a, tr, content, dgst)
			for _, n := range []*node{a, b} {
				m, err := n.Manifest(ctx, refForTests(), dgst)
				if tc.want == "" {
					if err == nil {
						t.Fatalf("%s serves %s as a manifest of type %q", n.ip, tc.name, m.MediaType)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", n.ip, err)
				}
				if m.MediaType != tc.want || m.Digest != dgst || string(m.Content) != tc.content {
					t.Fatalf("%s: Manifest = %q %s %q, want %q %s", n.ip, m.MediaType, m.Digest, m.Content, tc.want, dgst)
				}
			}
		})
	}
}
