package swarm

import (
	"github.com/anacrolix/torrent"
)

// Piece choice. A download wants every piece of the chunks in its window
// (the chunk the stream reads and the next windowChunks−1; in a followed
// blob, every chunk published so far) at once, not in stream order: the
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

// windowChunks is how many chunks a stream wants at once, from the one it
// reads: more than two cuts the seeder's duplicate uploads at large N (the
// lead's rollout model), while a blob far from the stream is not fetched
// before anyone needs it.
const windowChunks = 4

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
