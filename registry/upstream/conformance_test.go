package upstream_test

import (
	"io"
	"log"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/dregistry/dregistry/registry/oci"
	"github.com/dregistry/dregistry/registry/sourcetest"
	"github.com/dregistry/dregistry/registry/upstream"
)

func TestUpstreamConformance(t *testing.T) {
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	sourcetest.Run(t, sourcetest.Harness{
		Registry: host, ResolvesTags: true, ServesManifests: true,
		New: func(t *testing.T, c sourcetest.Content) oci.Source {
			repo, err := name.NewRepository(c.Ref.String(), name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			if err := remote.WriteLayer(repo, static.NewLayer(c.Blob, types.OCIConfigJSON)); err != nil {
				t.Fatal(err)
			}
			if err := remote.Put(repo.Tag(c.Tag), rawManifest{c.Manifest}); err != nil {
				t.Fatal(err)
			}
			u, err := upstream.New(upstream.Config{
				PlainHTTP: []string{host},
				Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			return u
		},
	})
}

// rawManifest lets remote.Put push exact bytes with their media type.
type rawManifest struct{ m oci.Manifest }

func (r rawManifest) RawManifest() ([]byte, error)        { return r.m.Content, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return types.MediaType(r.m.MediaType), nil }
