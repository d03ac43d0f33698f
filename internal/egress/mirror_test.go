package egress

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/dregistry/dregistry/registry"
	"github.com/dregistry/dregistry/registry/oci"
)

// Through registry's mirror handler on a plain node, as containerd asks:
// tag HEAD, manifest GET, blob GET and a Range retry, all via the egress.
func TestMirrorPullsThroughTheEgress(t *testing.T) {
	up := newTestUpstream(t)
	c := up.content(1<<20+123, 17)
	tn := newTwoNodes(t, up)
	mirror := httptest.NewServer(registry.NewHandler(registry.Config{
		Sources:       []oci.Source{tn.b.source},
		TagSources:    []oci.Source{tn.b.source},
		LookupTimeout: 20 * time.Second,
		StallTimeout:  time.Minute,
		Logger:        testLogger(),
	}))
	t.Cleanup(mirror.Close)
	base := mirror.URL + "/v2/" + c.Ref.Repository
	ns := "?ns=" + c.Ref.Registry
	size := len(c.Blob)

	for _, tc := range []struct {
		name, method, path, rng string
		wantStatus              int
		wantBody                []byte
		wantDigest              string
	}{
		{"tag HEAD", "HEAD", "/manifests/" + c.Tag, "", 200, nil, c.Manifest.Digest.String()},
		{"manifest GET", "GET", "/manifests/" + c.Manifest.Digest.String(), "", 200, c.Manifest.Content, c.Manifest.Digest.String()},
		{"blob GET", "GET", "/blobs/" + c.BlobDigest().String(), "", 200, c.Blob, c.BlobDigest().String()},
		{"blob Range retry", "GET", "/blobs/" + c.BlobDigest().String(), fmt.Sprintf("bytes=%d-", size/3), 206, c.Blob[size/3:], c.BlobDigest().String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(testCtx(t), tc.method, base+tc.path+ns, nil)
			if tc.rng != "" {
				req.Header.Set("Range", tc.rng)
			}
			resp, body := doRequest(t, req)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantStatus, body)
			}
			if got := resp.Header.Get("Docker-Content-Digest"); got != tc.wantDigest {
				t.Errorf("Docker-Content-Digest %q, want %q", got, tc.wantDigest)
			}
			if tc.wantBody != nil && !bytes.Equal(body, tc.wantBody) {
				t.Errorf("body of %d bytes, want %d", len(body), len(tc.wantBody))
			}
		})
	}
	if n := up.gets(c.BlobDigest()); n != 1 {
		t.Errorf("upstream saw %d blob GETs, want 1", n)
	}
}

func doRequest(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	return resp, buf.Bytes()
}
