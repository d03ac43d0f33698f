package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/internal/testenv"
)

// Issue 12 item 3/4/7: members are those holding the cluster key. A daemon
// without it (or with another key) that joins with --insecure-gossip does
// not become a member: the members do not list it and do not list what it
// seeds.
func TestDaemonWithoutTheKeyIsNoMember(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts four nodes")
	}
	testenv.RequireRoot(t)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(6)+":5500")
	img := testenv.PushImage(t, up, "e2e/members", "v1", 1<<20)
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 2, Upstream: up})
	bin := testenv.BuildDregistry(t)
	join := []string{"--join", nodes[0].GossipAddr}
	keyless := testenv.StartNode(t, testenv.NodeConfig{Name: "keyless", IP: testenv.LoopbackIP(41), Upstream: up, Binary: bin,
		NoClusterKey: true, ExtraArgs: append([]string{"--insecure-gossip"}, join...)})
	otherKey := testenv.StartNode(t, testenv.NodeConfig{Name: "otherkey", IP: testenv.LoopbackIP(42), Upstream: up, Binary: bin,
		ExtraArgs: join}) // a key of its own
	layer := img.Layers[0].Digest.String()
	keyless.Pull(t, img.Ref)
	otherKey.Pull(t, img.Ref)

	// Each has tried to join and been dropped (memberlist's join failed).
	for _, n := range []*testenv.Node{keyless, otherKey} {
		waitFor(t, time.Minute, n.Name+" tried to join and failed", func() (bool, string) {
			log, _ := os.ReadFile(n.LogPath)
			return bytes.Contains(log, []byte("join failed")), n.LogTail()
		})
	}
	for _, n := range nodes {
		// Member names are the daemons' own (hostname-<advertised IP>).
		got := memberNames(t, n)
		for name := range got {
			if strings.HasSuffix(name, "-"+keyless.IP) || strings.HasSuffix(name, "-"+otherKey.IP) {
				t.Errorf("%s lists the non-member %s", n.Name, name)
			}
		}
		if len(got) != 2 {
			t.Errorf("%s lists members %v, want the two members only", n.Name, got)
		}
		for _, s := range seeders(t, n, layer) {
			if s.HTTPAddr == keyless.HTTPAddr || s.HTTPAddr == otherKey.HTTPAddr {
				t.Errorf("%s lists the non-member seeder %+v of %s", n.Name, s, layer)
			}
		}
	}
	for _, n := range []*testenv.Node{keyless, otherKey} {
		if got := memberNames(t, n); len(got) != 1 {
			t.Errorf("%s counts members %v, want only itself", n.Name, got)
		}
	}
}

// memberNames is the member list of n's stats, by node name.
func memberNames(t *testing.T, n *testenv.Node) map[string]bool {
	t.Helper()
	r := memberGet(t, n, "/admin/v1/stats")
	var st struct {
		Node    string `json:"node"`
		Members []struct {
			Name string `json:"name"`
		} `json:"members"`
	}
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &st) != nil {
		t.Fatalf("%s: stats: %d %.200s", n.Name, r.Status, r.Body)
	}
	out := map[string]bool{}
	for _, m := range st.Members {
		out[m.Name] = true
	}
	return out
}

// Issue 12 item 3/7: a process on a member's own address without the key
// — here the test binding node2's loopback address — gets nothing: every
// /peer/v1 endpoint (blobs, metainfo, egress) and the admin endpoints
// answer 403, and its TCP connection to the torrent port is closed
// without a byte (no BitTorrent handshake answer). The same requests
// signed with the cluster key, from the same address, succeed: the key is
// what is checked. /metrics, /healthz and /readyz answer anyone.
func TestSpoofedMemberAddressWithoutTheKeyIsRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts two nodes")
	}
	testenv.RequireRoot(t)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(6)+":5500")
	img := testenv.PushImage(t, up, "e2e/spoof", "v1", 1<<20)
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 2, Upstream: up,
		Args: func(i int) []string {
			if i == 0 {
				return []string{"--egress"}
			}
			return nil
		}})
	target, spoofed := nodes[0], nodes[1]
	target.Pull(t, img.Ref)
	layer := img.Layers[0].Digest.String()
	egressQuery := "?" + url.Values{"ns": {up.Addr}, "repo": {img.Repo}}.Encode()
	waitFor(t, 30*time.Second, target.Name+" seeds "+layer, func() (bool, string) {
		r := memberGet(t, target, "/peer/v1/metainfo/"+layer, "X-Dregistry-No-Forward: 1")
		return r.Status == http.StatusOK, fmt.Sprint(r.Status)
	})

	from := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(spoofed.IP)}}
	otherKey := testenv.NewClusterKey(t)
	clients := map[string]*http.Client{
		"unsigned":          {Timeout: requestTimeout, Transport: &http.Transport{DialContext: from.DialContext}},
		"signed, other key": {Timeout: requestTimeout, Transport: &peerauth.Transport{Base: &http.Transport{DialContext: from.DialContext}, Keys: otherKey.Keys, Node: spoofed.Name}},
	}
	member := &http.Client{Timeout: requestTimeout, Transport: &peerauth.Transport{Base: &http.Transport{DialContext: from.DialContext}, Keys: spoofed.Key.Keys, Node: spoofed.Name}}
	// POST: the egress start path (issue 13); the rest are GETs.
	const startPath = "POST /peer/v1/egress/fetch/"
	refused := []string{
		startPath + layer + egressQuery,
		"/peer/v1/blobs/" + layer,
		"/peer/v1/metainfo/" + layer,
		"/peer/v1/egress/blobs/" + layer + egressQuery,
		"/peer/v1/egress/manifests/" + img.Manifest.Digest.String() + egressQuery,
		"/peer/v1/egress/tags/" + img.Tag + egressQuery,
		"/admin/v1/stats",
		"/admin/v1/seeders/" + layer,
		"/admin/v1/torrents",
		"/",
		"/status",
	}
	get := func(c *http.Client, path string) (int, []byte) {
		method := http.MethodGet
		if p, ok := strings.CutPrefix(path, "POST "); ok {
			method, path = http.MethodPost, p
		}
		req, err := http.NewRequest(method, target.URL()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Dregistry-No-Forward", "1")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		return resp.StatusCode, body
	}
	for name, c := range clients {
		for _, path := range refused {
			code, body := get(c, path)
			if code != http.StatusForbidden || !strings.Contains(string(body), `"error"`) {
				t.Errorf("%s from %s: %s: %d %.200s, want 403", name, spoofed.IP, path, code, body)
			}
		}
	}
	for _, path := range refused {
		if code, body := get(member, path); code != http.StatusOK {
			t.Errorf("signed with the cluster key from %s: %s: %d %.200s, want 200", spoofed.IP, path, code, body)
		}
	}
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		if code, body := get(clients["unsigned"], path); code != http.StatusOK {
			t.Errorf("unsigned GET %s: %d %.200s, want 200 (probes and Prometheus need it)", path, code, body)
		}
	}

	// The torrent port: a BitTorrent handshake from the member's address
	// gets no byte back, and the connection is closed within the
	// handshake's deadline.
	conn, err := from.Dial("tcp", target.TorrentAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hs := append([]byte("\x13BitTorrent protocol"), make([]byte, 8)...)
	infoHash := make([]byte, 40) // info hash and peer id
	rand.Read(infoHash)
	if _, err := conn.Write(append(hs, infoHash...)); err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(2 * peerauth.HandshakeTimeout))
	// The daemon closes with our bytes unread, so the close may arrive as
	// a reset: either way, no byte and no timeout.
	answer, err := io.ReadAll(conn)
	var ne net.Error
	if len(answer) != 0 || errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("torrent port answered a keyless BitTorrent handshake from %s: %q, %v; want nothing and a closed connection", spoofed.IP, answer, err)
	}
	// With the key, from the same address, the cluster handshake passes.
	keyed := peerauth.Dialer{Keys: spoofed.Key.Keys, Dialer: from}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	mc, err := keyed.DialContext(ctx, "tcp", target.TorrentAddr)
	if err != nil {
		t.Fatalf("with the cluster key the torrent handshake failed: %v", err)
	}
	mc.Close()
}
