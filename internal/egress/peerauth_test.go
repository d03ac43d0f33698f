package egress

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/registry/oci"
)

func egressKeys(t testing.TB, b byte) *peerauth.Keys {
	t.Helper()
	k, err := peerauth.New([][]byte{bytes.Repeat([]byte{b}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func signingClient(k *peerauth.Keys) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &peerauth.Transport{Base: &http.Transport{}, Keys: k, Node: "test"}}
}

// TestKeyedPeerEndpoint: in a keyed cluster the owner answers its peers'
// signed requests and refuses everything else with 403, even from a
// member's address, without asking its upstream.
func TestKeyedPeerEndpoint(t *testing.T) {
	up := newTestUpstream(t)
	c := up.content(64<<10, 21)
	k := egressKeys(t, 1)
	members := &cluster{}
	withKey := func(sc *SourceConfig) {
		sc.Gate, sc.Client = &peerauth.Gate{Keys: k, Member: members.IsMember}, signingClient(k)
	}
	owner := newNodeWith(t, "a", true, up.source(), members, nil, withKey)
	asker := newNodeWith(t, "b", false, &forbiddenUpstream{}, members, nil, withKey)
	members.set(owner.member(true), asker.member(false))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := asker.source.Blob(ctx, c.Ref, c.BlobDigest())
	if err != nil {
		t.Fatalf("a keyed member asking the owner: %v", err)
	}
	got, err := readAllAt(ctx, b, 0)
	if err != nil || !bytes.Equal(got, c.Blob) {
		t.Fatalf("a keyed member got %d bytes, %v", len(got), err)
	}
	before := up.gets(c.BlobDigest())

	q := "?" + url.Values{"ns": {c.Ref.Registry}, "repo": {c.Ref.Repository}}.Encode()
	for _, tc := range []struct {
		name   string
		client *http.Client
	}{
		{"unsigned, from a member address", &http.Client{Timeout: 10 * time.Second}},
		{"signed with another key", signingClient(egressKeys(t, 2))},
	} {
		for _, path := range []string{blobsPath + c.BlobDigest().String(), manifestsPath + c.Manifest.Digest.String(), tagsPath + "latest"} {
			req, _ := http.NewRequestWithContext(ctx, "GET", owner.srv.URL+path+q, nil)
			req.Header.Set(oci.NoForwardHeader, "1")
			resp, err := tc.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s: %s: %d, want 403", tc.name, path, resp.StatusCode)
			}
		}
	}
	if n := up.gets(c.BlobDigest()); n != before {
		t.Errorf("refused requests reached the upstream: %d GETs after, %d before", n, before)
	}
}
