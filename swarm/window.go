package swarm

import (
	"slices"
	"time"

	"github.com/anacrolix/torrent"
)

// Piece choice. A download wants every piece of the chunks in its window
// (below) at once, not in stream order: the
// library then takes them by priority, then partial pieces, then
// availability (rarest first), then index. With equal availability, the
// index alone would make N downloaders of one seeder ask it for the same
// pieces in the same order, and then have nothing to trade. So each node
// sorts a chunk's pieces into four priority tiers by a hash of (its own
// random seed, chunk, piece): inside a tier the library still goes rarest
// first, but every node starts on its own random quarter of the chunk, and
// what one fetched from the seeder is what the others ask it for. A hash,
// not a per-node rotation: the lead's rollout model (internal/rolloutmodel)
// found rotations walk in step (cold 1 GiB, N=8: 1.48x vs 1.17x for a
// hash). The stream's own reader raises only the piece it is blocked on
// (PiecePriorityNow, above every tier; readahead of one piece).
//
// Measured on loopback (BenchmarkWarmSpread, swarm/BENCHMARKS.md; one
// seeder, three downloaders of a 96 MiB blob at once, the seeder's upload as
// a multiple of the blob): see the table there. Loopback is free, so the
// library asks the seeder as readily as a peer; the seeder-capped rows show
// the trading a real link forces. (The old strictly-in-order stream with
// 64 MiB readahead had all downloaders want the same pieces: issue 13
// measured 595 MB of 128 MiB uploaded by the seeder at N=8.)
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

// wantChunk asks for every piece of chunk k of a download. It takes the
// client lock (per piece): callers may hold Swarm.mu, never a lock the
// library's callbacks take.
func (s *Swarm) wantChunk(t *torrent.Torrent, k int) {
	for i := range t.NumPieces() {
		if t.PieceState(i).Complete {
			continue
		}
		t.Piece(i).SetPriority(pieceTiers[pieceRank(s.tiebreak, k, i)%uint64(len(pieceTiers))])
	}
}

// pieceRank is a per-node pseudo-random rank of piece i of chunk k
// (splitmix64 of the three).
func pieceRank(seed uint64, k, i int) uint64 {
	x := seed ^ uint64(k)*0x9e3779b97f4a7c15 ^ uint64(i)*0xbf58476d1ce4e5b9
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}
