package swarm

import (
	"bytes"
	"context"
	"io"
	"testing"
)

// When the download a stream reads is replaced by a local seed of the same
// digest (the egress spool verified, or containerd committed the blob), the
// stream goes on from the seed instead of failing with a closed torrent —
// but only where every byte it serves stays checked.
func TestStreamContinuesFromTheSeedThatReplacedItsDownload(t *testing.T) {
	for _, tc := range []struct {
		name       string
		offset     int64
		readBefore int
		wantErr    bool
	}{
		{"from 0, mid-stream (the stream hashes the whole blob)", 0, 64 << 10, false},
		{"from an offset, nothing served yet", 1 << 20, 0, false},
		{"from an offset, mid-stream (nothing would check the mix)", 1 << 20, 64 << 10, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTracker()
			a := startNode(t, tr, "127.0.0.2", "", nil)
			d := startNode(t, tr, "127.0.0.3", "", nil)
			content, dgst := randomBlob(t, 4<<20)
			seed(t, a, tr, content, dgst)

			rc, err := openBlob(t, d, dgst, tc.offset)
			if err != nil {
				t.Fatal(err)
			}
			first := make([]byte, tc.readBefore)
			if _, err := io.ReadFull(rc, first); err != nil {
				t.Fatal(err)
			}
			if err := d.Seed(context.Background(), dgst, int64(len(content)), bytes.NewReader(content)); err != nil {
				t.Fatal(err)
			}
			rest, err := io.ReadAll(rc)
			if tc.wantErr {
				if err == nil {
					t.Fatal("a stream from an offset switched sources mid-way; want an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("stream failed after its download was replaced by a seed: %v", err)
			}
			mustEqual(t, append(first, rest...), content[tc.offset:])
		})
	}
}
