package tracker

import (
	"slices"
)

// index is every origin's announcements as this node knows them: digest →
// a small slice of 8-byte refs, origins and digests interned as uint32 ids.
// It is a last-writer-wins map per origin, ordered by (epoch, seq): an
// origin numbers its changes, so a delayed or relayed older message can
// never undo a newer one, and a withdrawal is kept as a tombstone until a
// snapshot of the origin that is at least as new makes it redundant.
//
// index is not safe for concurrent use; Tracker guards it.
type index struct {
	ids         map[sha256Digest]uint32
	digests     []sha256Digest
	holders     [][]ref
	freeDigests []uint32

	origins     []*origin // by id; nil when free
	byName      map[string]uint32
	freeOrigins []uint32

	maxOrigins int
	maxRefs    int // per origin, tombstones included

	// Changes of other members applied from gossip (snapshot entries only
	// when they differ from what was known), for Stats.
	announcementsApplied, withdrawalsApplied uint64
}

const (
	stateShift = 30
	idMask     = 1<<stateShift - 1
)

// ref is one origin's latest word on one digest: id and state share a word.
type ref struct {
	word uint32 // origin id (low 30 bits) | state << 30
	seq  uint32
}

func (r ref) id() uint32        { return r.word & idMask }
func (r ref) state() entryState { return entryState(r.word >> stateShift) }
func makeRef(id uint32, s entryState, seq uint32) ref {
	return ref{word: id | uint32(s)<<stateShift, seq: seq}
}

// origin is what the index knows about one member's inventory.
type origin struct {
	id    uint32
	name  string
	epoch uint64
	// base: every change up to it is reflected; entries with seq <= base
	// need no individual sequence number. maxSeq is the newest seen.
	base, maxSeq uint32
	// cleared: the entries were dropped (the member left) while base kept
	// its value, so the next own snapshot, even at the same base, applies.
	cleared bool

	alive bool // memberlist lists it as alive or suspect
	// departed: memberlist reported it dead or gone. Gossip of this run
	// still in flight (relayed views, late broadcasts) is refused until
	// memberlist sees it alive again or a newer run speaks.
	departed bool
	meta     nodeMeta
	metaOK   bool

	digests []uint32 // digest ids it has refs on; may hold stale ids
	refs    int
}

func newIndex(maxOrigins, maxRefs int) *index {
	return &index{
		ids:        make(map[sha256Digest]uint32),
		byName:     make(map[string]uint32),
		maxOrigins: maxOrigins,
		maxRefs:    maxRefs,
	}
}

// origin returns the record of name, creating it if create is set and the
// bound on records allows.
func (x *index) origin(name string, create bool) *origin {
	if id, ok := x.byName[name]; ok {
		return x.origins[id]
	}
	if !create || len(x.byName) >= x.maxOrigins {
		return nil
	}
	o := &origin{name: name}
	if n := len(x.freeOrigins); n > 0 {
		o.id = x.freeOrigins[n-1]
		x.freeOrigins = x.freeOrigins[:n-1]
		x.origins[o.id] = o
	} else {
		o.id = uint32(len(x.origins))
		x.origins = append(x.origins, o)
	}
	x.byName[name] = o.id
	return o
}

// newEpoch resets o for a new run of the member. It reports false when the
// epoch is older than the one known: such input is stale.
func (x *index) newEpoch(o *origin, epoch uint64) bool {
	if epoch < o.epoch {
		return false
	}
	if epoch > o.epoch {
		x.dropRefs(o, func(ref) bool { return true })
		o.epoch, o.base, o.maxSeq, o.cleared, o.departed = epoch, 0, 0, false, false
	}
	return true
}

// apply merges a view and reports whether anything changed.
func (x *index) apply(v *view) (changed bool, stale bool) {
	o := x.origin(v.Name, true)
	if o == nil {
		return false, true
	}
	if !x.newEpoch(o, v.Epoch) || (o.departed && v.Epoch == o.epoch) {
		return false, true
	}
	if v.Base > o.base || (o.cleared && v.Base != 0 && v.Base >= o.base) {
		// A newer snapshot: drop what it covers, keep newer changes.
		base := v.Base
		before := x.covered(o, base)
		x.dropRefs(o, func(r ref) bool { return r.seq <= base })
		o.base, o.cleared = base, false
		o.maxSeq = max(o.maxSeq, base)
		changed = true
		for i := range v.Entries {
			e := &v.Entries[i]
			if e.Seq != 0 {
				continue
			}
			if x.set(o, e.Digest, e.State, base) && before[e.Digest] != e.State {
				x.count(e.State)
			}
			delete(before, e.Digest)
		}
		for _, s := range before {
			if s != stateWithdrawn { // the snapshot no longer lists it
				x.count(stateWithdrawn)
			}
		}
	}
	for i := range v.Entries {
		if e := &v.Entries[i]; e.Seq != 0 && x.set(o, e.Digest, e.State, e.Seq) {
			x.count(e.State)
			changed = true
		}
	}
	return changed, false
}

// covered returns o's entries a snapshot at base replaces, to tell what
// in it is news.
func (x *index) covered(o *origin, base uint32) map[sha256Digest]entryState {
	out := make(map[sha256Digest]entryState)
	for _, id := range o.digests {
		for _, r := range x.holders[id] {
			if r.id() == o.id && r.seq <= base {
				out[x.digests[id]] = r.state()
			}
		}
	}
	return out
}

// count tallies one change of another member applied from gossip.
func (x *index) count(s entryState) {
	if s == stateWithdrawn {
		x.withdrawalsApplied++
	} else {
		x.announcementsApplied++
	}
}

// set records one change if it is newer than what the index holds.
func (x *index) set(o *origin, d sha256Digest, s entryState, seq uint32) bool {
	id, known := x.ids[d]
	if known {
		hs := x.holders[id]
		for i, r := range hs {
			if r.id() != o.id {
				continue
			}
			if r.seq >= seq {
				return false
			}
			hs[i] = makeRef(o.id, s, seq)
			o.maxSeq = max(o.maxSeq, seq)
			return true
		}
	}
	// No ref yet: the snapshot at base already says the origin lacks it.
	if seq < o.base || (seq == o.base && s == stateWithdrawn) || o.refs >= x.maxRefs {
		return false
	}
	if !known {
		id = x.intern(d)
	}
	x.holders[id] = append(x.holders[id], makeRef(o.id, s, seq))
	o.digests = append(o.digests, id)
	o.refs++
	o.maxSeq = max(o.maxSeq, seq)
	return true
}

func (x *index) intern(d sha256Digest) uint32 {
	var id uint32
	if n := len(x.freeDigests); n > 0 {
		id = x.freeDigests[n-1]
		x.freeDigests = x.freeDigests[:n-1]
		x.digests[id] = d
	} else {
		id = uint32(len(x.digests))
		x.digests = append(x.digests, d)
		x.holders = append(x.holders, nil)
	}
	x.ids[d] = id
	return id
}

// dropRefs removes o's refs that match and compacts o's digest list.
func (x *index) dropRefs(o *origin, match func(ref) bool) {
	kept := o.digests[:0]
	for _, id := range o.digests {
		hs := x.holders[id]
		i := slices.IndexFunc(hs, func(r ref) bool { return r.id() == o.id })
		if i < 0 {
			continue // stale id in the list
		}
		if !match(hs[i]) {
			kept = append(kept, id)
			continue
		}
		hs[i] = hs[len(hs)-1]
		hs = hs[:len(hs)-1]
		o.refs--
		if len(hs) == 0 {
			delete(x.ids, x.digests[id])
			x.holders[id] = nil
			x.freeDigests = append(x.freeDigests, id)
			continue
		}
		if cap(hs) > 8 && len(hs) < cap(hs)/4 {
			hs = slices.Clip(slices.Clone(hs))
		}
		x.holders[id] = hs
	}
	// A freed digest id may be reused by another digest this origin holds;
	// dedupe so the list stays bounded by the origin's refs.
	slices.Sort(kept)
	o.digests = slices.Clip(slices.Compact(kept))
}

// clear drops all of o's entries (the member left or failed) and keeps
// base at the newest sequence seen, so older gossip cannot bring them back.
func (x *index) clear(o *origin) {
	x.dropRefs(o, func(ref) bool { return true })
	o.base, o.cleared = o.maxSeq, true
}

// depart drops o's entries because its member is gone, and refuses more
// gossip of its current run.
func (x *index) depart(o *origin) {
	x.clear(o)
	o.alive, o.departed = false, true
}

// remove forgets o entirely (its record bound was reached).
func (x *index) remove(o *origin) {
	x.dropRefs(o, func(ref) bool { return true })
	delete(x.byName, o.name)
	x.origins[o.id] = nil
	x.freeOrigins = append(x.freeOrigins, o.id)
}

// viewOf returns what the index knows of o, in wire order.
func (x *index) viewOf(o *origin) view {
	v := view{Name: o.name, Epoch: o.epoch, Base: o.base, Entries: make([]entry, 0, o.refs)}
	for _, id := range o.digests {
		for _, r := range x.holders[id] {
			if r.id() != o.id {
				continue
			}
			e := entry{Digest: x.digests[id], State: r.state(), Seq: r.seq}
			if r.seq <= o.base {
				e.Seq = 0
			}
			v.Entries = append(v.Entries, e)
		}
	}
	sortEntries(v.Entries)
	return v
}

// holdersOf returns the refs on d; the slice must not be kept.
func (x *index) holdersOf(d sha256Digest) []ref {
	id, ok := x.ids[d]
	if !ok {
		return nil
	}
	return x.holders[id]
}
