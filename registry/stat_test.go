package registry

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/registry/oci"
)

// statingSource is a fakeSource that can size a blob from metadata.
type statingSource struct {
	*fakeSource
	stats atomic.Int64
}

func (s *statingSource) StatBlob(ctx context.Context, ref oci.Ref, dgst digest.Digest) (int64, error) {
	s.stats.Add(1)
	if err := s.lookup(ctx); err != nil {
		return 0, err
	}
	b, ok := s.blobs[ref.String()+"@"+dgst.String()]
	if !ok {
		return 0, oci.ErrNotFound
	}
	return int64(len(b)), nil
}

// A HEAD of a blob asks a BlobStater for the size only: its Blob (which
// would start a download) is not called; a GET still is.
func TestHeadOfABlobAsksTheSizeOnly(t *testing.T) {
	st := &statingSource{fakeSource: newFakeSource("egress")}
	var data []byte
	var dgst digest.Digest
	f := newFixture(t, func(f *fixture, cfg *Config) {
		data = randomBytes(3<<20, 7)
		dgst = st.addBlob(f.ref, data)
		cfg.Sources = []oci.Source{f.local, st}
	})
	path := f.url("/v2/library/alpine/blobs/" + dgst.String())
	resp, body, err := doRequest(t, http.MethodHead, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Length") != strconv.Itoa(len(data)) ||
		resp.Header.Get("Docker-Content-Digest") != dgst.String() || len(body) != 0 {
		t.Fatalf("HEAD: %s, Content-Length %q, digest %q, %d body bytes", resp.Status, resp.Header.Get("Content-Length"), resp.Header.Get("Docker-Content-Digest"), len(body))
	}
	if st.stats.Load() != 1 || st.blobCalls.Load() != 0 {
		t.Fatalf("HEAD made %d stats and %d Blob calls, want 1 and 0", st.stats.Load(), st.blobCalls.Load())
	}
	missing := f.url("/v2/library/alpine/blobs/sha256:" + sha256Hex)
	if resp, _, err := doRequest(t, http.MethodHead, missing, nil); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("HEAD of an unknown blob: %v, %v", resp, err)
	}
	resp, body, err = doRequest(t, http.MethodGet, path, nil)
	if err != nil || resp.StatusCode != http.StatusOK || string(body) != string(data) {
		t.Fatalf("GET: %v, %d bytes", err, len(body))
	}
	if st.blobCalls.Load() != 1 {
		t.Fatalf("GET made %d Blob calls, want 1", st.blobCalls.Load())
	}
}
