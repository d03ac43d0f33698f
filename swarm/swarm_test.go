package swarm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/registry/oci"
)

func seed(t testing.TB, n *node, tr *tracker, content []byte, dgst digest.Digest) {
	t.Helper()
	if err := n.Seed(context.Background(), dgst, int64(len(content)), bytes.NewReader(content)); err != nil {
		t.Fatalf("seed on %s: %v", n.ip, err)
	}
	tr.announce(dgst, n)
}

func TestOneSeederToOneDownloader(t *testing.T) {
	tr := newTracker()
	a := startNode(t, tr, "127.0.0.2", "", nil)
	b := startNode(t, tr, "127.0.0.3", "", nil)
	content, dgst := randomBlob(t, 20<<20+7)
	seed(t, a, tr, content, dgst)

	got, err := readBlob(t, b, dgst, 0)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, content)
	st := b.Stats().Torrents
	if len(st) != 1 || !st[0].Verified || st[0].Seeding || st[0].ReceivedFrom["127.0.0.2"] < int64(len(content)) {
		t.Fatalf("stats after download: %+v", st)
	}
	// A range request starts at its offset and is still checked whole.
	got, err = readBlob(t, b, dgst, 12345)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, content[12345:])
}

func TestRangeFirstDownloadIsVerifiedFromStorage(t *testing.T) {
	tr := newTracker()
	a := startNode(t, tr, "127.0.0.2", "", nil)
	b := startNode(t, tr, "127.0.0.3", "", nil)
	content, dgst := randomBlob(t, 12<<20)
	seed(t, a, tr, content, dgst)
	got, err := readBlob(t, b, dgst, 5<<20+3)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, content[5<<20+3:])
	if st := b.Stats().Torrents; len(st) != 1 || !st[0].Verified {
		t.Fatalf("range download not verified: %+v", st)
	}
}

func TestThreeSeedersToOneDownloader(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 48<<20)
	for _, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		seed(t, startNode(t, tr, ip, "", nil), tr, content, dgst)
	}
	d := startNode(t, tr, "127.0.0.5", "", nil)
	got, err := readBlob(t, d, dgst, 0)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, content)
	from := d.Stats().Torrents[0].ReceivedFrom
	var total int64
	for _, n := range from {
		total += n
	}
	if total < int64(len(content)) || len(from) < 2 {
		t.Fatalf("received %d bytes from %v; want pieces from several seeders", total, from)
	}
}

func TestVanishedSeederIsReplaced(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 32<<20)
	// Chunks of 2 MiB: the download wants the chunk it reads and the next
	// one only, so most of the blob is left when the seeder goes.
	small := func(c *Config) { c.chunkBytes = 2 << 20 }
	a := startNode(t, tr, "127.0.0.2", "", small)
	seed(t, a, tr, content, dgst)
	d := startNode(t, tr, "127.0.0.4", "", small)

	rc, err := openBlob(t, d, dgst, 0)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 4<<20)
	if _, err := io.ReadFull(rc, first); err != nil {
		t.Fatal(err)
	}
	// The only seeder goes away mid-download; another appears in the tracker.
	tr.withdraw(dgst, a)
	a.stop()
	c := startNode(t, tr, "127.0.0.3", "", small)
	seed(t, c, tr, content, dgst)

	rest, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, append(first, rest...), content)
	if from := d.Stats().Torrents[0].ReceivedFrom; from["127.0.0.3"] == 0 {
		t.Fatalf("nothing received from the replacement seeder: %v", from)
	}
}

func TestNoSeederIsNotFound(t *testing.T) {
	tr := newTracker()
	d := startNode(t, tr, "127.0.0.2", "", nil)
	_, err := d.Blob(context.Background(), oci.Ref{}, digest.FromString("nobody has this"))
	if !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("err = %v, want not found", err)
	}
	if _, err := d.Blob(context.Background(), oci.Ref{}, "sha256:nothex"); err == nil || errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("malformed digest: err = %v, want a clear error", err)
	}
	if _, err := d.Resolve(context.Background(), oci.Ref{}, "latest"); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("resolve: %v", err)
	}
}

func TestSmallBlobComesOverHTTP(t *testing.T) {
	tr := newTracker()
	a := startNode(t, tr, "127.0.0.2", "", nil)
	d := startNode(t, tr, "127.0.0.3", "", nil)
	content, dgst := randomBlob(t, 300<<10)
	seed(t, a, tr, content, dgst)
	got, err := readBlob(t, d, dgst, 100)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, content[100:])
	if st := d.Stats().Torrents; len(st) != 0 {
		t.Fatalf("small blob went through a torrent: %+v", st)
	}
}

func TestSmallBlobFromALyingSeederIsRefused(t *testing.T) {
	tr := newTracker()
	a := startNode(t, tr, "127.0.0.2", "", nil)
	d := startNode(t, tr, "127.0.0.3", "", nil)
	content, dgst := randomBlob(t, 64<<10)
	seed(t, a, tr, content, dgst)
	// The seeder's content changes under it after seeding.
	e := a.seeded(dgst)
	bad := bytes.Clone(content)
	bad[1000] ^= 0xff
	e.seed = bytes.NewReader(bad)
	if _, err := d.Blob(context.Background(), oci.Ref{}, dgst); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("err = %v, want not found after the only seeder failed", err)
	}
}

func TestPeerEndpointServesMembersOnly(t *testing.T) {
	tr := newTracker()
	a := startNode(t, tr, "127.0.0.2", "", nil)
	content, dgst := randomBlob(t, 1<<20)
	seed(t, a, tr, content, dgst)
	get := func(path string) (int, []byte) {
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Get(a.http.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	if code, body := get("/peer/v1/blobs/" + dgst.String()); code != 200 || !bytes.Equal(body, content) {
		t.Fatalf("blob: %d, %d bytes", code, len(body))
	}
	if code, body := get("/peer/v1/metainfo/" + dgst.String()); code != 200 || !bytes.Equal(body, a.seeded(dgst).info.infoBytes) {
		t.Fatalf("metainfo: %d", code)
	}
	for path, want := range map[string]int{
		"/peer/v1/blobs/" + digest.FromString("x").String(): 404,
		"/peer/v1/blobs/sha256:zz":                          400,
		"/peer/v1/other":                                    404,
	} {
		if code, _ := get(path); code != want {
			t.Errorf("%s: %d, want %d", path, code, want)
		}
	}
	tr.mu.Lock()
	tr.outside[netip.MustParseAddr("127.0.0.1")] = true
	tr.mu.Unlock()
	if code, _ := get("/peer/v1/blobs/" + dgst.String()); code != http.StatusForbidden {
		t.Fatalf("non-member got %d", code)
	}
}

func TestBandwidthLimitsStillDeliver(t *testing.T) {
	tr := newTracker()
	limited := func(c *Config) { c.UploadLimit, c.DownloadLimit = 32<<20, 32<<20 }
	a := startNode(t, tr, "127.0.0.2", "", limited)
	d := startNode(t, tr, "127.0.0.3", "", limited)
	content, dgst := randomBlob(t, 6<<20)
	seed(t, a, tr, content, dgst)
	got, err := readBlob(t, d, dgst, 0)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, content)
}

func TestConfigErrors(t *testing.T) {
	tr := newTracker()
	gate := &peerauth.Gate{Member: tr.IsMember}
	for name, cfg := range map[string]Config{
		"no data dir":    {Seeders: tr, Members: tr},
		"no tracker":     {DataDir: t.TempDir()},
		"negative limit": {DataDir: t.TempDir(), Seeders: tr, Members: tr, Gate: gate, UploadLimit: -1},
		"bad address":    {DataDir: t.TempDir(), Seeders: tr, Members: tr, Gate: gate, ListenAddr: "127.0.0.1"},
		"bad port":       {DataDir: t.TempDir(), Seeders: tr, Members: tr, Gate: gate, ListenAddr: "127.0.0.1:http"},
		"odd chunk":      {DataDir: t.TempDir(), Seeders: tr, Members: tr, Gate: gate, ChunkSize: 100 << 10},
		"huge chunk":     {DataDir: t.TempDir(), Seeders: tr, Members: tr, Gate: gate, ChunkSize: 1 << 20},
	} {
		if s, err := New(cfg); err == nil {
			s.Close()
			t.Errorf("%s: accepted", name)
		}
	}
}
