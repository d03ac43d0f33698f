package swarm

import (
	"testing"

	"github.com/dregistry/dregistry/registry/oci"
	"github.com/dregistry/dregistry/registry/sourcetest"
)

// The swarm keeps the Source contract like every other source, whether the
// content is this node's own seed or comes from a seeder the tracker names
// (the blob through its chunk torrents, the manifest whole over HTTP).
func TestSourceConformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		pick func(seeder, downloader *node) *node
	}{
		{"from a seeder", func(_, d *node) *node { return d }},
		{"on the seeder", func(s, _ *node) *node { return s }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sourcetest.Run(t, sourcetest.Harness{
				New: func(t *testing.T, c sourcetest.Content) oci.Source {
					tr := newTracker()
					a := startNode(t, tr, "127.0.0.2", "", nil)
					b := startNode(t, tr, "127.0.0.3", "", nil)
					seed(t, a, tr, c.Blob, c.BlobDigest())
					seed(t, a, tr, c.Manifest.Content, c.Manifest.Digest)
					return tc.pick(a, b).Swarm
				},
				ServesManifests: true,
			})
		})
	}
}
