package tracker

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math"

	"github.com/opencontainers/go-digest"
)

// inventory is this node's own announcements: the authoritative copy that
// its snapshots carry, and the changes not yet broadcast.
type inventory struct {
	name    string
	epoch   uint64
	seq     uint32 // number of the latest change
	have    map[sha256Digest]entryState
	pending []entry // changes to broadcast, oldest first

	announced, withdrawn uint64 // changes made, for Stats
}

var errSeqExhausted = errors.New("tracker: 2^32 inventory changes in one run; restart the daemon to start a new epoch")

// change records one state change of d; withdrawn deletes it. It reports
// whether anything changed.
func (inv *inventory) change(d sha256Digest, s entryState) (bool, error) {
	cur, ok := inv.have[d]
	switch {
	case s == stateWithdrawn && !ok,
		ok && cur == s,
		ok && cur == stateComplete && s == statePartial:
		return false, nil
	}
	if inv.seq == math.MaxUint32 {
		return false, errSeqExhausted
	}
	inv.seq++
	if s == stateWithdrawn {
		delete(inv.have, d)
		inv.withdrawn++
	} else {
		inv.have[d] = s
		inv.announced++
	}
	inv.pending = append(inv.pending, entry{Digest: d, State: s, Seq: inv.seq})
	return true, nil
}

// snapshot is the whole inventory as of the latest change.
func (inv *inventory) snapshot() view {
	v := view{Name: inv.name, Epoch: inv.epoch, Base: inv.seq, Entries: make([]entry, 0, len(inv.have))}
	for d, s := range inv.have {
		v.Entries = append(v.Entries, entry{Digest: d, State: s})
	}
	sortEntries(v.Entries)
	return v
}

// takePending turns the pending changes into announcement messages of at
// most maxBytes each, newest change of each digest only.
func (inv *inventory) takePending(maxBytes int) [][]byte {
	if len(inv.pending) == 0 {
		return nil
	}
	latest := make(map[sha256Digest]entry, len(inv.pending))
	for _, e := range inv.pending {
		latest[e.Digest] = e
	}
	inv.pending = inv.pending[:0]
	es := make([]entry, 0, len(latest))
	for _, e := range latest {
		es = append(es, e)
	}
	sortEntries(es)
	v := view{Name: inv.name, Epoch: inv.epoch}
	perMsg := (maxBytes - encodedViewLen(&v) - 3) / (digestLen + 1 + 5)
	var msgs [][]byte
	for len(es) > 0 {
		n := min(perMsg, len(es))
		v.Entries = es[:n]
		es = es[n:]
		msgs = append(msgs, appendView(appendHeader(nil, kindAnnounce, 1), &v))
	}
	return msgs
}

// errNotSHA256 marks a valid digest of another algorithm (sha512): the wire
// carries 32 raw bytes, so such blobs are served but never announced. It is
// not a bad input: Announce, Withdraw and Resync skip it.
var errNotSHA256 = errors.New("only sha256 digests are announced")

// parseDigest accepts only sha256 digests: the wire carries 32 raw bytes.
func parseDigest(d digest.Digest) (sha256Digest, error) {
	var out sha256Digest
	if err := d.Validate(); err != nil {
		return out, fmt.Errorf("tracker: digest %q: %w", d, err)
	}
	if d.Algorithm() != digest.SHA256 {
		return out, fmt.Errorf("tracker: digest %q: %w", d, errNotSHA256)
	}
	raw, err := hex.DecodeString(d.Encoded())
	if err != nil {
		return out, fmt.Errorf("tracker: digest %q: %w", d, err)
	}
	copy(out[:], raw)
	return out, nil
}

func formatDigest(d sha256Digest) digest.Digest {
	return digest.NewDigestFromBytes(digest.SHA256, d[:])
}
