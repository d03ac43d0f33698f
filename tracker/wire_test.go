package tracker

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func encodeMessage(kind uint8, views ...view) []byte {
	b := appendHeader(nil, kind, len(views))
	for i := range views {
		b = appendView(b, &views[i])
	}
	return b
}

func validAnnounce() []byte {
	v := view{Name: "x", Epoch: 7, Entries: []entry{
		{Digest: raw("a"), State: stateComplete, Seq: 3},
		{Digest: raw("b"), State: stateWithdrawn, Seq: 4},
	}}
	sortEntries(v.Entries)
	return encodeMessage(kindAnnounce, v)
}

func validState() []byte {
	own := snapshot(9, 12, "a", "b", "c")
	own.Name = "y"
	relayed := view{Name: "x", Epoch: 7, Base: 2, Entries: []entry{
		{Digest: raw("a"), State: statePartial},
		{Digest: raw("d"), State: stateWithdrawn, Seq: 5},
	}}
	sortEntries(relayed.Entries)
	return encodeMessage(kindState, own, relayed)
}

func TestWireRoundTrip(t *testing.T) {
	for _, b := range [][]byte{validAnnounce(), validState()} {
		m, err := decode(b, maxStateBytes)
		if err != nil {
			t.Fatal(err)
		}
		if again := encodeMessage(m.Kind, m.Views...); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", again, b)
		}
	}
}

// mutate returns a copy of b with f applied.
func mutate(b []byte, f func([]byte) []byte) []byte { return f(slices.Clone(b)) }

// Offsets into validAnnounce: 0 version, 1 kind, 2 #views, 3 name length,
// 4 name "x", 5 epoch, 6 base, 7 #entries, 8..39 digest, 40 state, 41 seq.
func TestMalformedMessagesAreDroppedAndCounted(t *testing.T) {
	a, s := validAnnounce(), validState()
	big := view{Name: "x", Epoch: 1}
	for i := range 60 {
		big.Entries = append(big.Entries, entry{Digest: raw(strings.Repeat("z", i+1)), State: stateComplete, Seq: uint32(i + 1)})
	}
	sortEntries(big.Entries)
	cases := map[string][]byte{
		"empty":                      {},
		"one byte":                   {wireVersion},
		"unknown version":            mutate(a, func(b []byte) []byte { b[0] = 2; return b }),
		"unknown kind":               mutate(a, func(b []byte) []byte { b[1] = 9; return b }),
		"announcement with 2 views":  mutate(s, func(b []byte) []byte { b[1] = kindAnnounce; return b }),
		"announcement with a base":   mutate(a, func(b []byte) []byte { b[6] = 1; return b }),
		"view count beyond the data": mutate(a, func(b []byte) []byte { b[2] = 100; return b }),
		"empty name":                 mutate(a, func(b []byte) []byte { b[3] = 0; return b }),
		"name not UTF-8":             mutate(a, func(b []byte) []byte { b[4] = 0xff; return b }),
		"name longer than the data":  mutate(a, func(b []byte) []byte { b[3] = 120; return b }),
		"entry count beyond data":    mutate(a, func(b []byte) []byte { b[7] = 3; return b }),
		"unknown entry state":        mutate(a, func(b []byte) []byte { b[40] = 7; return b }),
		"zero entry state":           mutate(a, func(b []byte) []byte { b[40] = 0; return b }),
		"snapshot entry, no base":    mutate(a, func(b []byte) []byte { b[41] = 0; return b }),
		"truncated":                  a[:len(a)-1],
		"truncated mid-digest":       a[:20],
		"trailing byte":              append(slices.Clone(a), 0),
		"non-minimal varint":         mutate(a, func(b []byte) []byte { return slices.Replace(b, 5, 6, 0x87, 0x00) }),
		"varint overflow":            mutate(a, func(b []byte) []byte { return slices.Insert(b, 5, bytes.Repeat([]byte{0xff}, 10)...) }),
		"sequence beyond 32 bits":    mutate(a, func(b []byte) []byte { return append(b[:41], 0x80, 0x80, 0x80, 0x80, 0x10, 0x02) }),
		"duplicate digest":           mutate(a, func(b []byte) []byte { copy(b[42:74], b[8:40]); return b }),
		"oversized announcement":     encodeMessage(kindAnnounce, big),
		"change not newer than base": mutate(s, func(b []byte) []byte {
			return bytes.Replace(b, []byte{byte(stateWithdrawn), 5}, []byte{byte(stateWithdrawn), 2}, 1)
		}),
		"tombstone in a snapshot": mutate(s, func(b []byte) []byte {
			return bytes.Replace(b, []byte{byte(stateWithdrawn), 5}, []byte{byte(stateWithdrawn), 0}, 1)
		}),
	}
	c := newCluster(t, 1, nil)
	tr := c.nodes[0]
	d := &delegate{tr}
	dropped := tr.Stats().Dropped
	for name, b := range cases {
		d.NotifyMsg(b)
		d.MergeRemoteState(b, false)
		after := tr.Stats()
		if after.Dropped != dropped+2 {
			t.Errorf("%s: dropped went from %d to %d, want +2", name, dropped, after.Dropped)
		}
		dropped = after.Dropped
		if after.Announcements != 0 || after.Origins != 0 {
			t.Fatalf("%s: a malformed message changed the index: %+v", name, after)
		}
	}
	// The same messages intact are accepted: the cases fail for the reason named.
	d.NotifyMsg(a)
	d.MergeRemoteState(s, false)
	if st := tr.Stats(); st.Dropped != dropped || st.Announcements == 0 {
		t.Fatalf("valid messages were not taken: %+v", st)
	}
}

func TestDecodeErrorsAreMarked(t *testing.T) {
	_, err := decode([]byte{1, 1, 1, 0}, 100)
	if !errors.Is(err, errMalformed) {
		t.Fatalf("decode error %v does not wrap errMalformed", err)
	}
	if _, err := decode(validState(), 10); !errors.Is(err, errMalformed) || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("an over-limit message: %v", err)
	}
}

func TestStaleGossipAfterWithdrawalOverTheNetwork(t *testing.T) {
	c := newCluster(t, 3, nil)
	origin, observer := c.nodes[1], c.nodes[2]
	d := testDigest("short-lived")
	if err := origin.Announce(d, true); err != nil {
		t.Fatal(err)
	}
	// Capture the announcement as gossip carried it.
	origin.mu.Lock()
	old := origin.own.takePending(origin.cfg.MaxMessageBytes)
	origin.mu.Unlock()
	for _, m := range old {
		origin.enqueue(m)
	}
	waitFor(t, "the announcement", converge, func() bool { return seesExactly(observer, d, origin.LocalName()) })
	if err := origin.Withdraw(d); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the withdrawal", converge, func() bool { return len(observer.Lookup(d)) == 0 })
	// A delayed copy of the old announcement arrives: it must lose.
	for _, m := range old {
		(&delegate{observer}).NotifyMsg(m)
	}
	if got := observer.Lookup(d); len(got) != 0 {
		t.Fatalf("a stale announcement resurrected %v", seederNames(got))
	}
}

func TestMetaRoundTripAndLimits(t *testing.T) {
	m := nodeMeta{Egress: true, Epoch: 1 << 60, HTTPAddr: "10.0.0.1:5001", TorrentAddr: netip.MustParseAddrPort("[fd00::1]:6881"), Version: "v1.2.3"}
	b, err := m.encode()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 512 {
		t.Fatalf("metadata of %d bytes exceeds memberlist's 512", len(b))
	}
	got, err := decodeMeta(b)
	if err != nil || got != m {
		t.Fatalf("decodeMeta = %+v, %v; want %+v", got, err, m)
	}
	worst := nodeMeta{HTTPAddr: strings.Repeat("h", maxMetaField), Version: strings.Repeat("v", maxMetaField), TorrentAddr: m.TorrentAddr, Epoch: 1<<64 - 1}
	if b, err := worst.encode(); err != nil || len(b) > 512 {
		t.Fatalf("largest metadata: %d bytes, %v", len(b), err)
	}
	if _, err := (nodeMeta{HTTPAddr: strings.Repeat("h", maxMetaField+1)}).encode(); err == nil {
		t.Fatal("an oversized field was encoded")
	}
	for name, bad := range map[string][]byte{
		"empty": nil, "unknown version": {9, 0}, "unknown role": {metaVersion, 0x80},
		"truncated": b[:len(b)-1], "trailing": append(slices.Clone(b), 0),
	} {
		if _, err := decodeMeta(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
