package egress

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/registry/oci"
	"github.com/dregistry/dregistry/registry/upstream"
)

// TestPeerHandlerFetchesOnlyNamedRegistries: the owner checks a member's
// ns against its own operator's list before any lookup or spool.
func TestPeerHandlerFetchesOnlyNamedRegistries(t *testing.T) {
	up := newTestUpstream(t)
	c := up.content(10<<10, 3)
	client, err := upstream.New(upstream.Config{PlainHTTP: []string{up.host()}, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	members := &cluster{}
	owner := newNode(t, "a", true, client, members, nil)
	src, err := NewSource(SourceConfig{Self: "a", Egress: true, Cluster: members, Fetcher: owner.fetcher,
		Gate: &peerauth.Gate{Member: members.IsMember}, Registries: client.Policy(), Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(src.PeerHandler())
	t.Cleanup(srv.Close)
	members.set(owner.member(true))
	noFwd := map[string]string{oci.NoForwardHeader: "1"}
	for _, tc := range []struct {
		ns   string
		want int
	}{
		{"127.0.0.1:1", http.StatusNotFound},
		{"169.254.169.254", http.StatusNotFound},
		{"evil.example", http.StatusNotFound},
		{up.host(), http.StatusOK},
	} {
		q := "?" + url.Values{"ns": {tc.ns}, "repo": {c.Ref.Repository}}.Encode()
		for _, path := range []string{blobsPath + c.BlobDigest().String(), manifestsPath + c.Manifest.Digest.String(), tagsPath + "v1"} {
			resp, _ := peerRequest(t, http.MethodGet, srv.URL+path+q, noFwd)
			if resp.StatusCode != tc.want {
				t.Errorf("GET %s for ns %s: %d, want %d", path, tc.ns, resp.StatusCode, tc.want)
			}
		}
		if tc.want == http.StatusNotFound && len(owner.spoolFiles(t)) != 0 {
			t.Fatalf("ns %s left spool files: %v", tc.ns, owner.spoolFiles(t))
		}
	}
}
