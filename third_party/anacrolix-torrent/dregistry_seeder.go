package torrent

import (
	"encoding/binary"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	pp "github.com/anacrolix/torrent/peer_protocol"
)

// dregistry's changes to piece requests (third_party/README.md): a seeder
// sends each piece about once, and a request is moved to another
// connection only for the piece a reader waits on, and only from a peer
// that delivered nothing for stealAfter. Measured with
// BenchmarkRollout (8 nodes, 128 MiB, 200 Mbit/s links): cold 2.99x -> 1.93x
// one pull, warm 2.04x -> 1.73x, each node receiving 1.03-1.12 blobs
// instead of 1.4-1.75 and no node uploading more than 1.27 blobs.

// skipAtSeeder reports whether p, a peer holding every piece (a seeder),
// should not be asked for piece i now. Among the peers this node sees still
// downloading (itself and its connections lacking pieces), one is
// designated per piece by a hash of the piece and its peer ID: only it asks
// the seeder, and the others take the piece from a downloading peer that
// has it. Every node computes the same designee when it sees the same
// peers. The piece a reader waits on (PiecePriorityNow) is taken from a
// downloading peer that has it, else left to its designee for nowGrace and
// then asked of the seeder by anyone, so when views differ, or a designee
// is slow, a stream does not wait long.
//
// The rule holds only for a peer that held every piece when it first told
// this node what it has (the egress with a chunk it published, the warm
// rollout's seeder): its uplink is the one every node shares. A peer that
// came to hold every piece while connected (a downloader that finished
// the chunk) is asked as any downloader is, and holds every piece for the
// rule's "a downloading peer has it". Under the rule, a reader's
// piece held by such a peer went to the egress too once the grace ran
// out, while that peer's one-piece request slot was busy: at N = 8 on
// 12 Mbit/s links about two thirds of the egress's 100 repeated requests
// in a cold rollout (docs/benchmarks.md, "Peers that finished a chunk").
// Called with the client lock held.
func (p *PeerConn) skipAtSeeder(i pieceIndex) bool {
	if all, known := p.peerHasAllPieces(); !all || !known || p.dregistryGrown {
		return false
	}
	t := p.t
	if t.dregistryNoDesignee {
		return false
	}
	now := t.piece(i).purePriority() >= PiecePriorityNow
	self := pieceRank(t.cl.peerID, i)
	designee, held := true, false
	for c := range t.conns {
		if c == p || c.closed.IsSet() {
			continue
		}
		all, known := c.peerHasAllPieces()
		if !known || all && !c.dregistryGrown {
			continue
		}
		if c.peerHasPiece(i) && !c.peerChoking {
			if !now {
				return true // a downloading or finished peer has it: take it there
			}
			held = true
		}
		if !all && pieceRank(c.PeerID, i) > self {
			designee = false // c is the one to fetch it from the seeder
		}
	}
	if held {
		designee = false
	} else if designee && t.dregistryView.outranked(t, self, i) {
		designee = false
	}
	if designee || !now {
		return !designee
	}
	// A piece the reader waits on that a downloading peer holds, or that
	// no downloading peer holds and is not this node's to fetch: it comes
	// from that peer, or from its designee (whose own reader is usually at
	// the same place), first; after nowGrace anyone may ask a seeder too.
	// The request pending at the holder moves only once that connection
	// delivered nothing for stealAfter (mayStealRequest), so a holder that
	// sends, however busy, keeps it; one that has stopped answering (seen
	// in BenchmarkRollout: a follower's request for the piece its stream
	// waited on went unanswered by the one downloading peer that held it,
	// and the seeders, never asked, left the stream stalled for 10 s)
	// no longer holds the stream.
	since, ok := t.dregistryNowSince[i]
	if !ok {
		since = time.Now()
		if t.dregistryNowSince == nil {
			t.dregistryNowSince = map[pieceIndex]time.Time{} // at most one entry per piece
		}
		t.dregistryNowSince[i] = since
	}
	if wait := p.nowGrace() - time.Since(since); wait > 0 {
		t.recheckStealsIn(wait)
		return true
	}
	return false
}

// nowGrace is how long, at least, a piece a reader waits on is left to its
// designee (or to a downloading peer that holds it) before this node asks
// the seeder for it too.
const nowGrace = 1500 * time.Millisecond

// maxNowGrace bounds that wait however slowly the seeder sends: inside
// the swarm's stall limit (StallTimeout, 30 s with no byte of the chunk
// arriving). At 6 s, with 16 nodes at 6 Mbit/s, a piece took the
// designee longer than that at the shared seeder, the others asked the
// seeder too, and the egress sent 1.6 blobs (docs/benchmarks.md "Peers
// that finished a chunk").
const maxNowGrace = 15 * time.Second

// nowGracePieces is that wait in piece times at the rate this node
// receives from the seeder.
const nowGracePieces = 3

// nowGrace is how long a piece a reader waits on is left to its designee
// (or to a downloading peer that holds it) before this node asks seeder p
// for it too: nowGracePieces piece times at the rate this node receives
// from p while it has requests pending there, within [nowGrace,
// maxNowGrace]. A designee shares the seeder's uplink with every other
// downloader, so where that uplink is slow a piece takes it longer than a
// fixed grace: at 4 Mbit/s, four nodes, a 256 KiB piece took the designee
// 1.5 s or more, and the other nodes, their grace over, asked the seeder
// for the same piece (39 of the 42 pieces the egress sent twice in a cold
// rollout; docs/benchmarks.md "Where the egress's extra bytes go" and "A
// grace in piece times"). The rate is taken
// over this node's connections to p in every chunk torrent of the blob: a
// chunk torrent's connection has received nothing when its first piece is
// awaited. Only while p is the one seeder under the rule this node sees in
// the torrent: with two, their uplinks are not one shared bottleneck. (A
// downloader that finished is asked freely, not under the rule: with the
// long grace applied to them as well, a stream's last pieces waited up to
// 6 s for a designee or a busy holder while finished peers sat idle, and
// the warm rollout's last seconds passed with no byte moving.) Called with
// the client lock held.
func (p *PeerConn) nowGrace() time.Duration {
	t := p.t
	if t.info == nil || t.info.PieceLength <= 0 || p.otherSeeder() {
		return nowGrace
	}
	var bytes int64
	var busy time.Duration
	add := func(o *Torrent) {
		for c := range o.conns {
			if c.PeerID == p.PeerID {
				bytes += c._stats.BytesReadUsefulData.Int64()
				busy += c.totalExpectingTime()
			}
		}
	}
	add(t)
	if blob, _, ok := strings.Cut(t.info.Name, "#"); ok {
		for o := range t.cl.torrents {
			if o != t && o.info != nil && strings.HasPrefix(o.info.Name, blob+"#") {
				add(o)
			}
		}
	}
	if bytes <= 0 || busy <= 0 {
		return nowGrace
	}
	piece := time.Duration(float64(t.info.PieceLength) / float64(bytes) * float64(busy))
	return min(max(nowGracePieces*piece, nowGrace), maxNowGrace)
}

// otherSeeder reports whether t has an open connection to a peer other
// than p's that held every piece from the start (a peer that finished
// while connected is asked freely: skipAtSeeder). Called with the client
// lock held.
func (p *PeerConn) otherSeeder() bool {
	for c := range p.t.conns {
		if c.PeerID == p.PeerID || c.closed.IsSet() || c.dregistryGrown {
			continue
		}
		if all, known := c.peerHasAllPieces(); all && known {
			return true
		}
	}
	return false
}

// pieceRank is a peer's rank for piece i, the same on every node. Peer IDs
// share a client prefix, so the ID and the index go through a full mix (a
// weak hash let one peer win nearly every piece and become the swarm's hub).
func pieceRank(id PeerID, i pieceIndex) uint64 {
	x := uint64(i) * 0x9e3779b97f4a7c15
	for k := 0; k < len(id); k += 8 {
		var b [8]byte
		copy(b[:], id[k:])
		x = mix64(x ^ binary.LittleEndian.Uint64(b[:]))
	}
	return mix64(x)
}

// mix64 is splitmix64's finalizer.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// mayStealRequest reports whether a request pending at existing may move
// to another connection: only for the piece a reader waits on, and only once
// the request has waited stealAfter while existing delivered nothing useful
// and no byte of the request's own piece message (quietSince).
// A cancelled peer on a busy link has usually sent the chunk already, and
// those duplicates were a tenth to three quarters of the bytes each node
// received. A refused steal re-decides the torrent's connections once the
// wait is over: nothing else may wake them.
func (t *Torrent) mayStealRequest(r RequestIndex, existing *PeerConn) bool {
	if t.piece(t.pieceIndexOfRequestIndex(r)).purePriority() < PiecePriorityNow {
		return false
	}
	wait := stealAfter - time.Since(t.quietSince(r, existing))
	if wait <= 0 {
		return true
	}
	t.recheckStealsIn(wait)
	return false
}

// quietSince is when r, pending at existing, last showed progress: the
// later of the request itself, existing's last useful chunk, and the last
// bytes of r's own piece message arriving, if they arrive at a rate that
// brings the whole message within arrivalBound of its first byte. A
// request is one piece message (256 KiB for blobs up to 256 MiB), which on
// a link shared by a dozen connections takes seconds to cross; counting
// only whole chunks, the rules moved requests whose payload was half way
// here, and the rest arrived anyway: at N = 16 on 6 Mbit/s links each node
// received 0.12 blobs it did not need, 180 KiB per request moved
// (BenchmarkRollout, docs/benchmarks.md). Counting any byte, a message
// trickling in at 14 KiB/s from a starved connection held the piece a
// stream waited on for 50 s while every other peer had it. Called with
// the client lock held.
func (t *Torrent) quietSince(r RequestIndex, existing *PeerConn) time.Time {
	since := existing.lastUsefulChunkReceived
	if st, ok := t.requestState[r]; ok && st.when.After(since) {
		since = st.when
	}
	a := &existing.dregistryArrival
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.read == 0 || t.requestIndexFromRequest(Request{Index: a.index, ChunkSpec: ChunkSpec{Begin: a.begin}}) != r {
		return since
	}
	// The whole message's time at the rate its bytes came so far.
	whole := time.Duration(float64(a.last.Sub(a.first)) * float64(a.length) / float64(a.read))
	if whole <= arrivalBound && a.last.After(since) {
		since = a.last
	}
	return since
}

// arrivalBound is the longest a piece message may take, at the rate its
// bytes arrive, for those bytes to count as progress: 256 KiB at 26 KiB/s.
// Above it the request moves as from a peer that sends nothing.
const arrivalBound = 10 * time.Second

// dregistryArrival is the piece message a connection is reading: its
// request, when its first and last payload bytes came, and how many of
// its length have. mu is a leaf lock.
type dregistryArrival struct {
	mu           sync.Mutex
	index, begin pp.Integer
	first, last  time.Time
	read, length int
}

// dregistryPieceData notes that read of the length payload bytes of the
// piece message for (index, begin) have arrived (pp.Decoder.PieceData, on
// the reading goroutine).
func (c *PeerConn) dregistryPieceData(index, begin pp.Integer, read, length int) {
	now := time.Now()
	a := &c.dregistryArrival
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.index != index || a.begin != begin || read <= a.read || a.read == a.length {
		// A new message: the previous one ended (or was cut).
		a.index, a.begin, a.first = index, begin, now
	}
	a.last, a.read, a.length = now, read, length
}

// stealAfter is how long a request a reader waits on stays with a
// connection that delivers nothing before another may take it.
const stealAfter = time.Second

// stuckRequest reports whether r, a request a reader waits on, has been
// pending at existing for stuckAfter while existing delivered nothing
// useful. Then the library's "don't steal from the poor" rule yields: it
// lets a connection take a request only if that connection received a
// chunk more recently than existing, so connections with nothing left to
// fetch (their last chunk older than existing's) could never take it, and
// the stream waited on one peer that had stopped answering while every
// other peer of the torrent held the piece (BenchmarkRollout, 8 MiB
// chunks: "stream stalled" after 10 s, the piece requested from one peer
// 13 s before, each idle connection's last chunk older). stuckAfter is
// longer than stealAfter so that a request moves between two slow
// connections at most once in that time. Called with the client lock held.
func (t *Torrent) stuckRequest(r RequestIndex, existing *PeerConn) bool {
	if t.piece(t.pieceIndexOfRequestIndex(r)).purePriority() < PiecePriorityNow {
		return false
	}
	wait := stuckAfter - time.Since(t.quietSince(r, existing))
	if wait <= 0 {
		return true
	}
	t.recheckStealsIn(wait)
	return false
}

// stuckAfter is how long a request a reader waits on may stay with a
// connection that delivers nothing before any connection may take it.
const stuckAfter = 3 * time.Second

// peerUpdateRequestsStealRecheckReason: a refused steal's wait is over.
const peerUpdateRequestsStealRecheckReason = "dregistry: steal recheck"

// recheckStealsIn has every connection of t decide its requests again in d,
// unless a recheck is pending already. Called with the client lock held.
func (t *Torrent) recheckStealsIn(d time.Duration) {
	if t.dregistryStealRecheck != nil {
		return
	}
	t.dregistryStealRecheck = time.AfterFunc(d, func() {
		t.cl.lock()
		defer t.cl.unlock()
		t.dregistryStealRecheck = nil
		if t.closed.IsSet() {
			return
		}
		for c := range t.conns {
			c.onNeedUpdateRequests(peerUpdateRequestsStealRecheckReason)
		}
	})
}

// dregistryMaxRequests bounds the requests pending at one connection to
// one piece's worth (at least two requests), where the library allowed up
// to 250 (62 MiB of 256 KiB requests). A peer serves each connection's
// requests in order, so a deep queue at a busy seeder held the piece every
// stream waited on behind megabytes of others; the designee's request then
// outlived nowGrace and other nodes asked the seeder too. With one piece
// pending, each connection asks for its next piece when the last arrives,
// from what it then knows of priorities and holders, and the seeder's
// uplink turns between its downloaders a piece at a time. Measured with
// BenchmarkRollout (8 nodes, 128 MiB, 50 Mbit/s links): warm 1.31x one
// pull -> 1.23x. A cluster's links are short (a LAN's round trip is well
// under a millisecond), so one piece in flight per connection still fills
// a link; a link with a long round trip would need more.
func (t *Torrent) dregistryMaxRequests() maxRequests {
	if t == nil || t.info == nil || t.chunkSize <= 0 {
		return 2
	}
	return max(2, maxRequests(t.info.PieceLength/int64(t.chunkSize)))
}

// A chunk torrent's connections take a moment to form, and until they
// have, a node sees few downloaders and believes itself the designee of
// pieces that are another's: both ask the seeder. Those were most of the
// seeder's duplicates (BenchmarkRollout, 8 nodes: about 75 of 96 duplicate
// requests it served, each at a chunk's start). So for settleFor after a
// torrent's first decision, the downloaders of the same blob that this node
// sees in its other chunk torrents count as candidates too; a piece one of
// them outranks this node for waits until it joins (or settleFor ends).

// settleFor is how long a torrent's designee view includes its blob's
// downloaders seen in other torrents.
const settleFor = time.Second

// dregistryView is a torrent's settling state.
type dregistryView struct {
	start   time.Time // first decision about a seeder; zero before
	at      time.Time // when peers was computed
	peers   []PeerID  // downloaders of the blob in sibling torrents
	settled bool
}

// outranked reports whether, while t settles, a downloader of t's blob that
// t has no connection to yet outranks self for piece i. It re-decides t's
// connections once settling ends. Called with the client lock held.
func (v *dregistryView) outranked(t *Torrent, self uint64, i pieceIndex) bool {
	if v.settled {
		return false
	}
	now := time.Now()
	if v.start.IsZero() {
		v.start = now
	}
	left := settleFor - now.Sub(v.start)
	if left <= 0 {
		v.settled, v.peers = true, nil
		return false
	}
	if now.Sub(v.at) > 100*time.Millisecond {
		v.at, v.peers = now, t.blobDownloaders(v.peers[:0])
	}
	for _, id := range v.peers {
		if pieceRank(id, i) > self {
			t.recheckStealsIn(left)
			return true
		}
	}
	return false
}

// blobDownloaders appends the peers still downloading some other torrent
// of t's blob (a chunk torrent "<digest>#<k>") that t has no connection
// to. Called with the client lock held.
func (t *Torrent) blobDownloaders(ids []PeerID) []PeerID {
	if t.info == nil {
		return ids
	}
	here := func(id PeerID) bool {
		for c := range t.conns {
			if c.PeerID == id {
				return true
			}
		}
		return false
	}
	blob, _, ok := strings.Cut(t.info.Name, "#")
	if !ok {
		return ids
	}
	for o := range t.cl.torrents {
		if o == t || o.info == nil || !strings.HasPrefix(o.info.Name, blob+"#") {
			continue
		}
		for c := range o.conns {
			if c.closed.IsSet() {
				continue
			}
			if all, known := c.peerHasAllPieces(); all || !known || c.PeerID == t.cl.peerID || slices.Contains(ids, c.PeerID) || here(c.PeerID) {
				continue
			}
			ids = append(ids, c.PeerID)
		}
	}
	return ids
}

// DregistrySetDesignee turns the designee rule (skipAtSeeder) on, as it is
// by default, or off, and has every connection decide its requests again.
// The rule needs every downloader in view: where the cluster holds more of
// them than a torrent connects to, each node would decide from a part of
// them, and a piece that none of the seeder's peers takes for its own would
// leave the seeder only after nowGrace (internal/rolloutmodel: 8-42x one
// transfer at 100 and 1,000 nodes). The swarm turns it off there.
func (t *Torrent) DregistrySetDesignee(on bool) {
	t.cl.lock()
	defer t.cl.unlock()
	if t.dregistryNoDesignee == !on {
		return
	}
	t.dregistryNoDesignee = !on
	for c := range t.conns {
		c.onNeedUpdateRequests(peerUpdateRequestsDesigneeReason)
	}
}

// DregistryDesignee reports whether the designee rule is on for t.
func (t *Torrent) DregistryDesignee() bool {
	t.cl.rLock()
	defer t.cl.rUnlock()
	return !t.dregistryNoDesignee
}

// peerUpdateRequestsDesigneeReason: the designee rule was turned on or off.
const peerUpdateRequestsDesigneeReason = "dregistry: designee rule changed"

// DregistryWriteStatus writes t's human-readable status (its connections,
// their requests and rates) to w, as Client.WriteStatus does for every
// torrent: the swarm logs it when a stream stalls.
func (t *Torrent) DregistryWriteStatus(w io.Writer) {
	t.cl.rLock()
	defer t.cl.rUnlock()
	t.writeStatus(w)
}
