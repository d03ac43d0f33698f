package swarm

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
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

	data, _ := st.paths(dgst, -1)
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

// A download the data dir cannot hold fails with an error in the log: the
// registry moves on to its next source silently, so this is all the
// operator sees of a full disk.
func TestDownloadStorageLogsWhyItCannotStore(t *testing.T) {
	content, dgst := randomBlob(t, 300<<10)
	b := mustHash(t, content, dgst)
	dir := t.TempDir()
	// A file where the digest algorithm's directory must go.
	if err := os.WriteFile(filepath.Join(dir, "sha256"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	st := downloadStorage{dir: dir, log: slog.New(slog.NewTextHandler(&logged, nil))}
	if _, err := st.OpenTorrent(context.Background(), &b.info, b.infoHash); err == nil {
		t.Fatal("OpenTorrent succeeded without a place for the download")
	}
	if out := logged.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, dgst.String()) || !strings.Contains(out, "not a directory") {
		t.Errorf("log: %q, want an error naming the digest and the cause", out)
	}
}
