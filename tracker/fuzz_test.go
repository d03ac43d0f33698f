package tracker

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to the message decoder and the index,
// and to the node metadata parser (every input, not only those that decode
// as a message): no input may panic, every rejection must be an
// errMalformed, an accepted message or metadata must be canonical
// (re-encoding gives the same bytes), and applying a message must leave the
// index consistent. The seed corpus is in testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	f.Add(validAnnounce())
	f.Add(validState())
	for _, m := range []nodeMeta{
		{Epoch: 5, HTTPAddr: "10.0.0.1:5001", TorrentAddr: netip.MustParseAddrPort("10.0.0.1:6881"), Version: "v1"},
		{Egress: true, Epoch: 1 << 40, HTTPAddr: "[fd00::1]:5001", TorrentAddr: netip.MustParseAddrPort("[fd00::1%eth0]:6881")},
		{},
	} {
		b, err := m.encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkMeta(t, b)
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
	})
}

// checkMeta parses b as node metadata: a rejection is an errMalformed, and
// what is accepted encodes back to exactly b.
func checkMeta(t *testing.T, b []byte) {
	meta, err := decodeMeta(b)
	if err != nil {
		if !errors.Is(err, errMalformed) {
			t.Fatalf("metadata rejection %v is not an errMalformed", err)
		}
		if meta != (nodeMeta{}) {
			t.Fatalf("rejected metadata came with a value: %+v", meta)
		}
		return
	}
	again, err := meta.encode()
	if err != nil {
		t.Fatalf("accepted metadata %+v does not encode: %v", meta, err)
	}
	if !bytes.Equal(again, b) {
		t.Fatalf("accepted non-canonical metadata:\n in  %x\n out %x", b, again)
	}
}
