package tracker

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to the decoder and to the index: no
// input may panic, every rejection must be an errMalformed, an accepted
// message must be canonical (re-encoding gives the same bytes), and
// applying it must leave the index consistent. The seed corpus is in
// testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	f.Add(validAnnounce())
	f.Add(validState())
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decode(b, maxStateBytes)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("rejection %v is not an errMalformed", err)
			}
			return
		}
		if again := encodeMessage(m.Kind, m.Views...); !bytes.Equal(again, b) {
			t.Fatalf("accepted a non-canonical message:\n in  %x\n out %x", b, again)
		}
		x := newIndex(64, 1000)
		for i := range m.Views {
			x.apply(&m.Views[i])
			x.apply(&m.Views[i]) // applying twice changes nothing more
		}
		checkIndex(t, x)
		if _, err := decodeMeta(b); err != nil && !errors.Is(err, errMalformed) {
			t.Fatalf("metadata rejection %v is not an errMalformed", err)
		}
	})
}
