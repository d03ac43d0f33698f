package swarm

import (
	"bytes"
	"crypto/sha1"
	"fmt"

	"github.com/anacrolix/torrent/metainfo"
)

// recheck hashes every piece an earlier run marked complete and unmarks the
// ones whose bytes on disk no longer match: the torrent is added without the
// library's initial check, so a resumed download would otherwise trust a
// piece corrupted on disk (and a stream starting past it would hand it out).
// It returns the pieces it unmarked.
func (d *download) recheck(info *metainfo.Info) ([]int, error) {
	var bad []int
	var buf []byte
	for i, complete := range d.complete {
		if !complete {
			continue
		}
		p := info.Piece(i)
		want, ok := p.V1Hash().AsTuple()
		if !ok {
			return bad, fmt.Errorf("piece %d has no hash", i)
		}
		if int64(cap(buf)) < p.Length() {
			buf = make([]byte, p.Length())
		}
		buf = buf[:p.Length()]
		got := [sha1.Size]byte{}
		if _, err := d.data.ReadAt(buf, p.Offset()); err == nil {
			got = sha1.Sum(buf)
		}
		if bytes.Equal(got[:], want[:]) {
			continue
		}
		if err := d.mark(i, false); err != nil {
			return bad, err
		}
		bad = append(bad, i)
	}
	return bad, nil
}
