package swarm

// Piece-length policy. Every node derives a blob's torrent on its own, so the
// piece length must be a pure function of the blob size: changing this table
// changes every infohash in the cluster (nodes on different versions would
// form separate swarms for the same digest).
//
//	blob size          piece length   pieces
//	≤ 256 MiB          256 KiB        ≤ 1024
//	≤ 1 GiB            1 MiB          ≤ 1024
//	≤ 4 GiB            2 MiB          ≤ 2048
//	≤ 16 GiB           4 MiB          ≤ 4096
//	larger             8 MiB          size/8 MiB
//
// Small pieces give a short time to first byte (a piece must be whole and
// verified before any of it is served) and spread a blob over more peers;
// large pieces keep the per-torrent bitfield and hash list small. Measured
// on loopback, 1 MiB and 4 MiB pieces moved a 1 GiB blob equally fast
// (shared/notes/torrent.md), so the table stays at the small end; figures in
// swarm/BENCHMARKS.md.
//
// Up to 256 MiB pieces are 256 KiB, where 64-256 MiB had 512 KiB: on capped
// links (BenchmarkRollout, 8 nodes, a 128 MiB layer at 50 Mbit/s) a piece
// reaches its first holder and is passed on in half the time, so the
// downlinks filled in 2 s instead of 4 at the start of a warm rollout, and
// the rollout took 1.24x one pull instead of 1.30x (cold 1.44x instead of
// 1.55x). Changing the table changed these blobs' infohashes (above).

// minPieceLength is the smallest piece length of the policy.
const minPieceLength = 256 << 10

// PieceLength returns the torrent piece length for a blob of size bytes: a
// power of two between 256 KiB and 8 MiB (see the table above).
func PieceLength(size int64) int64 {
	switch {
	case size <= 256<<20:
		return minPieceLength
	case size <= 1<<30:
		return 1 << 20
	case size <= 4<<30:
		return 2 << 20
	case size <= 16<<30:
		return 4 << 20
	default:
		return 8 << 20
	}
}
