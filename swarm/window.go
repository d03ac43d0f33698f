package swarm

import (
	"slices"
	"time"

	"github.com/anacrolix/torrent"
)

// Piece choice. A download wants every piece of the chunks in its window
// (below) at once, all at one priority, and the library takes them partial
// pieces first, then rarest first, then in index order; the stream's own
// reader raises the piece it is blocked on (PiecePriorityNow) and the one
// after it. Which node asks a seeder for which piece is the library's
// designee rule (third_party/anacrolix-torrent/dregistry_seeder.go): one
// downloader per piece, by a hash of the piece and the peer, so the
// downloaders already start on different pieces and have something to
// trade, and each asks the seeder for its own pieces in stream order.
//
// Each node used to sort a chunk's pieces into four priority tiers by a
// hash of its own seed, the chunk and the piece (a hash, not a rotation:
// the rollout model found rotations walk in step). That spread the
// downloaders before the designee rule existed; with it, the tiers only
// made each designee ask the seeder for its pieces in a random order, so
// the piece every stream waited on was often last in its designee's
// queue, the other nodes' nowGrace ran out, and they asked the seeder too.
// Without them the seeder served 15-19 duplicate requests of 512 per
// blob instead of 36-39 (BenchmarkRollout, 8 nodes, 128 MiB, 50 Mbit/s).
//
// A wide swarm goes back to the tiers, without the designee rule. The rule
// needs every downloader in view, and a torrent connects to at most
// MaxConns peers: when the tracker names more peers of a download than
// that, each node would decide from a part of the downloaders, and a piece
// none of the seeder's peers takes for its own would leave the seeder only
// after nowGrace. The rollout model (internal/rolloutmodel,
// docs/benchmarks.md) puts the rule at 8-42x one transfer at 100 and 1,000
// nodes with 50 connections each, and the tiers without it at 1.20-1.23x
// cold and 1.05-1.07x warm; without either, every node would ask the
// seeder for the same lowest piece (4x). A download turns wide when the
// tracker names more than MaxConns peers of it (at a chunk's start or a
// peer refresh), and stays so.
var pieceTiers = [...]torrent.PiecePriority{
	torrent.PiecePriorityNext, torrent.PiecePriorityReadahead, torrent.PiecePriorityHigh, torrent.PiecePriorityNormal,
}

// The window is the chunks from the one the stream reads on, as many as it
// takes for one chunk's bytes still to be missing (windowMissing), and at
// most 2·windowChunks of them; a followed blob's chunks join as they are
// published. It is measured in missing bytes, not chunks from the stream,
// because chunks are torrents of their own, so every chunk in the window
// gets an equal share of the links whatever the stream needs first:
//   - Four chunks from the stream (as it was) were wanted at once, so the
//     one the stream read completed about when all four did. Every node
//     then ran out of wanted pieces at once and waited for its stream: a
//     swarm-wide stall of about 5 s at 40 % of a 128 MiB blob on 50 Mbit/s
//     links (docs/benchmarks.md).
//   - Two chunks' worth of missing bytes left the stream's chunk starving
//     behind newer ones for 20 s in the same run.
//   - One chunk's worth keeps the chunks completing in order, a new one
//     joining while the last pieces of the one before are still coming.
//
// windowChunks also sets how many chunks a prefix fetch runs at once
// (prefix.go), and the memory each chunk keeps for the reader.
const windowChunks = 4

// windowTick is how often a download re-measures its window.
const windowTick = 200 * time.Millisecond

// windowMissing is how many bytes a download's window may still miss
// before it takes no further chunk.
func (l layout) windowMissing() int64 { return l.chunkBytes }

// keepWindow widens e's window as its chunks fill, until the download is
// verified or dropped.
func (s *Swarm) keepWindow(e *entry) {
	defer s.wg.Done()
	tick := time.NewTicker(windowTick)
	defer tick.Stop()
	for {
		if err := s.widenWindow(e); err != nil {
			return
		}
		select {
		case <-tick.C:
		case <-e.verified:
			return
		case <-e.stop:
			return
		case <-s.stop:
			return
		}
	}
}

// widenWindow sets e's window end from what its chunks still miss and adds
// the chunks of a download whose metainfo is known (a followed blob adds
// its chunks as they are published, addFollowedChunk). It takes the client
// lock (BytesMissing) outside s.mu.
func (s *Swarm) widenWindow(e *entry) error {
	s.mu.Lock()
	from, added := e.reading, slices.Clone(e.chunks)
	// A download no stream has reached yet fetches nothing; a followed
	// blob's chunks are wanted from its start (the caller streams it).
	unread := e.windowEnd == 0 && e.owner == ""
	s.mu.Unlock()
	if unread {
		return nil
	}
	end, missing := from, int64(0)
	for k := from; k < len(added) && k < from+2*windowChunks && missing < e.lay.windowMissing(); k++ {
		if c := added[k]; c != nil {
			missing += c.t.BytesMissing()
		} else {
			_, length := e.lay.span(k)
			missing += length
		}
		end = k + 1
	}
	s.mu.Lock()
	if end > e.windowEnd {
		e.windowEnd = end
		e.signalLocked()
	}
	s.mu.Unlock()
	for k := from; k < end; k++ {
		if added[k] != nil {
			continue
		}
		if _, err := s.ensureChunk(e, k); err != nil {
			return err
		}
	}
	return nil
}

// wantChunk asks for every piece of chunk k of a download: at one
// priority under the designee rule, or in this node's tiers without it in
// a wide swarm (see pieceTiers), pace apart (it returns early when the
// swarm closes). It takes the client lock (per piece): callers may hold
// Swarm.mu when pace is 0, never a lock the library's callbacks take.
// Turning wide, the rule goes off only once every piece has its tier, so
// whoever sees the rule off sees the tiers too.
func (s *Swarm) wantChunk(t *torrent.Torrent, k int, wide bool, pace time.Duration) {
	if !wide {
		t.DregistrySetDesignee(true)
	}
	for i := range t.NumPieces() {
		if t.PieceState(i).Complete {
			continue
		}
		prio := torrent.PiecePriorityNormal
		if wide {
			prio = pieceTiers[tierRank(s.tiebreak, k, i)%uint64(len(pieceTiers))]
		}
		t.Piece(i).SetPriority(prio)
		if pace > 0 {
			select {
			case <-time.After(pace):
			case <-s.stop:
				return
			}
		}
	}
	if wide {
		t.DregistrySetDesignee(false)
	}
}

// wantPace spaces the wanting of a new download chunk's pieces, its peers
// given only after the last (startChunk): 32 pieces of 256 KiB take
// 160 ms. It came in by accident, as a test's sleep left in wantChunk
// (7f6cf9c) under Swarm.mu, which held the streams, stats and peer
// endpoints waiting on that lock for those 160 ms per chunk; it now runs
// with no lock held. Without the pace the two capped runs measured were
// the slowest of their kind (docs/benchmarks.md, "The sleep in
// wantChunk"): in that time a chunk's connections form with every piece
// wanted and this node's own dials wait, and which of those the rollout
// gains from is not yet separated from the runs' spread.
const wantPace = 5 * time.Millisecond

// tierRank is a per-node pseudo-random rank of piece i of chunk k
// (splitmix64 of the three).
func tierRank(seed uint64, k, i int) uint64 {
	x := seed ^ uint64(k)*0x9e3779b97f4a7c15 ^ uint64(i)*0xbf58476d1ce4e5b9
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// widen turns download e wide once the tracker names more of its peers
// than a torrent connects to, and re-wants the chunks it has. Takes s.mu,
// then each chunk's wantMu (after a paced want of it: startChunk) and the
// client lock (wantChunk).
func (s *Swarm) widen(e *entry, peers int) {
	if peers <= s.cfg.MaxConns {
		return
	}
	s.mu.Lock()
	was := e.wide
	e.wide = true
	var chunks []*chunk
	if !was {
		for _, c := range e.chunks {
			if c != nil {
				chunks = append(chunks, c)
			}
		}
	}
	s.mu.Unlock()
	if was {
		return
	}
	s.log.Info("wide swarm: more peers than a torrent connects to; piece order per node, no designee rule", "digest", e.digest, "peers", peers, "max conns", s.cfg.MaxConns)
	for _, c := range chunks {
		c.wantMu.Lock()
		s.wantChunk(c.t, c.info.index, true, 0)
		c.wantMu.Unlock()
	}
}
