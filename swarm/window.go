package swarm

import (
	"github.com/anacrolix/torrent"
)

// Piece choice. A download wants every piece of the chunks in its window
// (the chunk the stream reads and the next one; in a followed blob, every
// chunk published so far) at once, not in stream order: the library then
// takes them by priority, then partial pieces, then availability (rarest
// first), then index. With equal availability, the index alone would make N
// downloaders of one seeder ask it for the same pieces in the same order,
// and then have nothing to trade. So each node ranks a chunk's pieces from
// its own rotation point and puts them into three priority tiers by that
// rank: inside a tier the library still goes rarest first, but nodes start
// on different thirds of the chunk, and what one fetched from the seeder
// is what the others ask it for. The stream's own reader raises only the
// piece it is blocked on (readahead of one piece), above every tier.
//
// Measured on loopback (BenchmarkWarmSpread, swarm/BENCHMARKS.md; one
// seeder, three downloaders of a 96 MiB blob at once, the seeder's upload as
// a multiple of the blob, mean of 2 runs): with the rotation 2.13x (1.32x
// with the seeder capped at 50 MiB/s), with every node in the same order
// 2.44x (1.40x). Loopback is free, so the library asks the seeder as
// readily as a peer; the gap is what the rotation buys, the cap shows the
// trading a real link forces. (The old strictly-in-order stream with
// 64 MiB readahead had all downloaders want the same pieces: issue 13
// measured 595 MB of 128 MiB uploaded by the seeder at N=8.)
var pieceTiers = [...]torrent.PiecePriority{torrent.PiecePriorityReadahead, torrent.PiecePriorityHigh, torrent.PiecePriorityNormal}

// wantChunk asks for every piece of chunk k of a download. It takes the
// client lock (per piece): callers may hold Swarm.mu, never a lock the
// library's callbacks take.
func (s *Swarm) wantChunk(t *torrent.Torrent, k int) {
	n := t.NumPieces()
	if n == 0 {
		return
	}
	// A different rotation per chunk too, so one node is not always the
	// first to hold the start of every chunk.
	r := int((s.tiebreak + uint64(k)*0x9e3779b97f4a7c15) % uint64(n))
	for i := range n {
		if t.PieceState(i).Complete {
			continue
		}
		rank := (i - r + n) % n
		t.Piece(i).SetPriority(pieceTiers[rank*len(pieceTiers)/n])
	}
}
