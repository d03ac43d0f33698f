package swarm

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/registry/oci"
)

func testKeys(t testing.TB, b byte) *peerauth.Keys {
	t.Helper()
	k, err := peerauth.New([][]byte{bytes.Repeat([]byte{b}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// keyed makes a node of the cluster holding k: it authenticates its
// torrent connections and signs its peer-HTTP requests.
func keyed(k *peerauth.Keys) func(*Config) {
	return func(c *Config) {
		c.PeerKeys = k
		c.HTTPClient = &http.Client{Timeout: 30 * time.Second, Transport: &peerauth.Transport{Base: &http.Transport{}, Keys: k, Node: "test"}}
	}
}

// TestKeyedMembersTradeAndOutsidersDoNot: with a cluster key, members
// download over authenticated torrent connections and signed peer HTTP,
// while a node at a member address with another key gets nothing: its
// torrent connections fail the handshake (counted) and its HTTP requests
// are refused.
func TestKeyedMembersTradeAndOutsidersDoNot(t *testing.T) {
	tr := newTracker()
	k := testKeys(t, 1)
	a := startNode(t, tr, "127.0.4.1", "", keyed(k))
	content, dgst := randomBlob(t, 4<<20) // above SmallBlobSize: the torrent path
	seed(t, a, tr, content, dgst)

	member := startNode(t, tr, "127.0.4.2", "", keyed(k))
	got, err := readBlob(t, member, dgst, 0)
	if err != nil {
		t.Fatalf("member download: %v", err)
	}
	mustEqual(t, got, content)
	small, smallDgst := randomBlob(t, 64<<10) // below: one signed GET
	seed(t, a, tr, small, smallDgst)
	got, err = readBlob(t, member, smallDgst, 0)
	if err != nil {
		t.Fatalf("member small download: %v", err)
	}
	mustEqual(t, got, small)

	outsider := startNode(t, tr, "127.0.4.3", "", func(c *Config) {
		keyed(testKeys(t, 2))(c)
		c.LookupTimeout = 2 * time.Second
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := outsider.Blob(ctx, oci.Ref{}, dgst); err == nil {
		t.Fatal("a node with another key got the blob's metainfo")
	}
	// Its torrent connection: dialled straight, as a download would.
	d := peerauth.Dialer{Keys: testKeys(t, 2), Dialer: &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.4.3")}}}
	if c, err := d.DialContext(ctx, "tcp", a.TorrentAddr().String()); err == nil {
		c.Close()
		t.Fatal("a node with another key passed the torrent handshake")
	}
	deadline := time.Now().Add(10 * time.Second)
	for a.Stats().AuthFailed == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if a.Stats().AuthFailed == 0 {
		t.Fatal("the seeder did not count the failed handshake")
	}
}

// TestKeyedPeerEndpointNeedsAToken: a member's address alone gets 403.
func TestKeyedPeerEndpointNeedsAToken(t *testing.T) {
	tr := newTracker()
	k := testKeys(t, 1)
	a := startNode(t, tr, "127.0.4.11", "", keyed(k))
	content, dgst := randomBlob(t, 64<<10)
	seed(t, a, tr, content, dgst)
	for _, c := range []struct {
		name   string
		client *http.Client
		want   int
	}{
		{"unsigned, from a member address", &http.Client{Timeout: 10 * time.Second}, http.StatusForbidden},
		{"signed with another key", keyedClient(testKeys(t, 2)), http.StatusForbidden},
		{"signed", keyedClient(k), http.StatusOK},
	} {
		for _, path := range []string{blobPathPrefix + dgst.String(), metainfoPathPrefix + dgst.String(), metainfoPathPrefix + dgst.String() + "?chunk=0"} {
			resp, err := c.client.Get(a.http.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Errorf("%s: %s: %d %s, want %d", c.name, path, resp.StatusCode, body, c.want)
			}
		}
	}
}

func keyedClient(k *peerauth.Keys) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &peerauth.Transport{Base: &http.Transport{}, Keys: k, Node: "test"}}
}
