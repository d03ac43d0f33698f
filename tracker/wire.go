package tracker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"
)

// The wire format of every tracker message (broadcasts, direct snapshots and
// push/pull state). Digests travel as 32 raw sha256 bytes.
//
//	message = version:1 kind:1 uvarint(#views) view...
//	view    = uvarint(len) name  uvarint(epoch)  uvarint(base)  uvarint(#entries) entry...
//	entry   = digest:32  state:1  uvarint(seq)
//
// A view is what the sender knows of one origin node's inventory: a snapshot
// as of sequence number base (entries with seq 0) plus later changes, each
// with the sequence number the origin gave it. Entries are sorted by digest,
// without duplicates, so a view is canonical and cheap to validate.
const (
	wireVersion = 1

	kindAnnounce = 1 // broadcast: one view, base 0, changes only
	kindState    = 2 // push/pull and direct snapshots: any number of views

	maxNameLen  = 128
	digestLen   = 32
	minEntryLen = digestLen + 2 // digest, state, one-byte seq
)

// entryState is what an origin says about one digest.
type entryState uint8

const (
	stateComplete  entryState = 1 // holds the whole verified blob
	statePartial   entryState = 2 // is downloading it and serves the pieces it has
	stateWithdrawn entryState = 3 // no longer has it (a tombstone)
)

func (s entryState) valid() bool { return s >= stateComplete && s <= stateWithdrawn }

type sha256Digest = [digestLen]byte

// entry is one digest in a view. Seq 0 means "part of the snapshot at base".
type entry struct {
	Digest sha256Digest
	State  entryState
	Seq    uint32
}

// view is one origin's inventory as the sender knows it.
type view struct {
	Name    string
	Epoch   uint64
	Base    uint32
	Entries []entry
}

// message is a decoded tracker message.
type message struct {
	Kind  uint8
	Views []view
}

// errMalformed marks every decoding failure, so callers count them as one.
var errMalformed = errors.New("malformed tracker message")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errMalformed, fmt.Sprintf(format, args...))
}

// encodedViewLen is an upper bound of a view's encoded size.
func encodedViewLen(v *view) int {
	return 3*binary.MaxVarintLen64 + len(v.Name) + len(v.Entries)*(digestLen+1+binary.MaxVarintLen32)
}

// appendHeader starts a message; finish it with appendView calls.
func appendHeader(b []byte, kind uint8, views int) []byte {
	b = append(b, wireVersion, kind)
	return binary.AppendUvarint(b, uint64(views))
}

// appendView encodes v; its entries must already be sorted by digest.
func appendView(b []byte, v *view) []byte {
	b = binary.AppendUvarint(b, uint64(len(v.Name)))
	b = append(b, v.Name...)
	b = binary.AppendUvarint(b, v.Epoch)
	b = binary.AppendUvarint(b, uint64(v.Base))
	b = binary.AppendUvarint(b, uint64(len(v.Entries)))
	for i := range v.Entries {
		e := &v.Entries[i]
		b = append(b, e.Digest[:]...)
		b = append(b, byte(e.State))
		b = binary.AppendUvarint(b, uint64(e.Seq))
	}
	return b
}

// sortEntries puts entries in wire order.
func sortEntries(es []entry) {
	slices.SortFunc(es, func(a, b entry) int { return bytes.Compare(a.Digest[:], b.Digest[:]) })
}

// decode parses and validates a message of at most maxLen bytes. Any
// violation returns an error wrapping errMalformed and no message.
func decode(b []byte, maxLen int) (*message, error) {
	if len(b) > maxLen {
		return nil, malformed("%d bytes exceed the limit of %d", len(b), maxLen)
	}
	if len(b) < 3 {
		return nil, malformed("%d bytes is too short", len(b))
	}
	if b[0] != wireVersion {
		return nil, malformed("unknown version %d", b[0])
	}
	m := &message{Kind: b[1]}
	if m.Kind != kindAnnounce && m.Kind != kindState {
		return nil, malformed("unknown kind %d", m.Kind)
	}
	r := reader{b: b[2:]}
	n := r.uvarint()
	// Each view takes at least 4 bytes: a bound before allocating.
	if r.err != nil || n > uint64(len(r.b)/4) {
		return nil, malformed("bad view count")
	}
	if m.Kind == kindAnnounce && n != 1 {
		return nil, malformed("an announcement carries one view, not %d", n)
	}
	m.Views = make([]view, 0, n)
	for range n {
		v, err := r.view()
		if err != nil {
			return nil, err
		}
		if m.Kind == kindAnnounce {
			if v.Base != 0 {
				return nil, malformed("an announcement has no snapshot base")
			}
		}
		m.Views = append(m.Views, v)
	}
	if len(r.b) != 0 {
		return nil, malformed("%d trailing bytes", len(r.b))
	}
	return m, nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = malformed("bad varint")
		return 0
	}
	// One encoding per number keeps messages canonical.
	if n > 1 && r.b[n-1] == 0 {
		r.err = malformed("non-minimal varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) uint32() uint32 {
	v := r.uvarint()
	if v > 1<<32-1 {
		r.err = malformed("number %d out of range", v)
	}
	return uint32(v)
}

func (r *reader) view() (view, error) {
	var v view
	nameLen := r.uvarint()
	if r.err != nil || nameLen == 0 || nameLen > maxNameLen || nameLen > uint64(len(r.b)) {
		return v, malformed("bad node name length")
	}
	v.Name = string(r.b[:nameLen])
	r.b = r.b[nameLen:]
	if !utf8.ValidString(v.Name) {
		return v, malformed("node name is not UTF-8")
	}
	v.Epoch = r.uvarint()
	v.Base = r.uint32()
	n := r.uvarint()
	if r.err != nil {
		return v, r.err
	}
	if n > uint64(len(r.b)/minEntryLen) {
		return v, malformed("%d entries cannot fit in %d bytes", n, len(r.b))
	}
	v.Entries = make([]entry, n)
	for i := range v.Entries {
		e := &v.Entries[i]
		if len(r.b) < digestLen+1 {
			return v, malformed("truncated entry")
		}
		copy(e.Digest[:], r.b[:digestLen])
		e.State = entryState(r.b[digestLen])
		r.b = r.b[digestLen+1:]
		e.Seq = r.uint32()
		if r.err != nil {
			return v, r.err
		}
		if !e.State.valid() {
			return v, malformed("unknown entry state %d", e.State)
		}
		if i > 0 && bytes.Compare(v.Entries[i-1].Digest[:], e.Digest[:]) >= 0 {
			return v, malformed("entries not sorted or duplicated")
		}
		// A snapshot holds what the origin had at base: no tombstones, and
		// a change after the snapshot must be newer than it.
		if e.Seq == 0 && (v.Base == 0 || e.State == stateWithdrawn) {
			return v, malformed("snapshot entry without base or withdrawn")
		}
		if e.Seq != 0 && e.Seq <= v.Base {
			return v, malformed("change %d not newer than base %d", e.Seq, v.Base)
		}
	}
	return v, nil
}
