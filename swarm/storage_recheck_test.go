package swarm

import (
	"bytes"
	"context"
	"os"
	"testing"
)

// A resumed download re-hashes the pieces marked complete: one corrupted on
// disk between runs is unmarked (and so fetched again), the others are kept.
func TestResumedDownloadUnmarksPiecesCorruptedOnDisk(t *testing.T) {
	const piece = 256 << 10
	content, dgst := randomBlob(t, 1<<20)
	b := mustHash(t, content, dgst)
	st := downloadStorage{dir: t.TempDir()}
	ti, err := st.OpenTorrent(context.Background(), &b.info, b.infoHash)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1, 2} {
		p := ti.Piece(b.info.Piece(i))
		if _, err := p.WriteAt(content[i*piece:(i+1)*piece], 0); err != nil {
			t.Fatal(err)
		}
		if err := p.MarkComplete(); err != nil {
			t.Fatal(err)
		}
	}
	ti.Close()

	data, _ := st.paths(dgst)
	f, err := os.OpenFile(data, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{content[piece+100] ^ 0xff}, piece+100); err != nil {
		t.Fatal(err)
	}
	f.Close()

	for reopen := range 2 {
		ti, err = st.OpenTorrent(context.Background(), &b.info, b.infoHash)
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range []bool{true, false, true, false} {
			if c := ti.Piece(b.info.Piece(i)).Completion(); !c.Ok || c.Complete != want {
				t.Errorf("open %d, piece %d: %+v, want complete=%v", reopen+2, i, c, want)
			}
		}
		buf := make([]byte, piece)
		if _, err := ti.Piece(b.info.Piece(2)).ReadAt(buf, 0); err != nil || !bytes.Equal(buf, content[2*piece:3*piece]) {
			t.Errorf("intact piece 2 read back: %v", err)
		}
		ti.Close()
	}
}
