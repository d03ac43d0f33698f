package rolloutmodel

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"

	"github.com/dregistry/dregistry/swarm"
)

// Mode is the way the blob spreads.
type Mode int

const (
	// Cold is the chunked, pipelined swarm: node 0 fetches the blob from the
	// upstream and publishes each chunk when complete; every node swarms the
	// published chunks.
	Cold Mode = iota
	// Warm is the same swarm with node 0 holding the whole blob at time 0
	// and no upstream.
	Warm
	// Star is today's cold path: node 0 fetches from the upstream and every
	// other node streams the blob from node 0 alone, in order, as it grows.
	Star
)

func (m Mode) String() string {
	switch m {
	case Cold:
		return "cold"
	case Warm:
		return "warm"
	case Star:
		return "star"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Config describes one rollout. Rates are bytes per second.
type Config struct {
	Blob  int64 // B
	Chunk int64 // C, a multiple of Piece
	Piece int64 // P
	Nodes int   // N, node 0 included (the egress owner, or the warm seeder)
	// Link is every node's cap, the same for upload and download (L).
	Link float64
	// Upstream is what the upstream sends node 0 (U); unused when Warm.
	Upstream float64
	// Slots bounds each node's concurrent uploads, and its concurrent
	// downloads; every transfer runs at Link/Slots.
	Slots int
	// Peers is each node's mean number of connections: a seeded random
	// graph, or everyone when Peers >= Nodes-1.
	Peers int
	// Window is how many chunks, from the lowest one a node lacks, it takes
	// pieces from: the stream's current chunk and the next.
	Window int
	// TieBreak orders pieces of equal rarity, per node.
	TieBreak TieBreak
	// Seed makes a run repeatable: the graph, the tie-breaks and the order
	// in which nodes ask.
	Seed uint64
}

// TieBreak is how a node orders pieces that are equally rare.
type TieBreak int

const (
	// Scatter orders the window by a per-node hash of the piece index.
	Scatter TieBreak = iota
	// Rotation walks the window in index order from a per-node offset.
	// Two nodes that take the same piece from one seeder in a round then
	// walk in step and keep asking it for the same pieces.
	Rotation
)

func (t TieBreak) String() string {
	if t == Rotation {
		return "rotation"
	}
	return "scatter"
}

// Mbit is one megabit per second in bytes per second.
const Mbit = 1e6 / 8

// DefaultConfig is the setup of issue 13's measurements: 200 Mbit/s links
// and upstream, the swarm's chunk and piece lengths for the blob's size, a
// window of 4 chunks (swarm's windowChunks), 4 upload slots and 50
// connections per node (swarm.Config.MaxConns).
func DefaultConfig(blob int64, nodes int) Config {
	return Config{
		Blob:     blob,
		Chunk:    swarm.ChunkBytes(blob),
		Piece:    swarm.PieceLength(blob),
		Nodes:    nodes,
		Link:     200 * Mbit,
		Upstream: 200 * Mbit,
		Slots:    4,
		Peers:    50,
		Window:   4,
		Seed:     1,
	}
}

func (c Config) validate(mode Mode) error {
	switch {
	case mode != Cold && mode != Warm && mode != Star:
		return fmt.Errorf("rolloutmodel: unknown mode %d", int(mode))
	case c.Blob <= 0 || c.Piece <= 0 || c.Chunk <= 0:
		return fmt.Errorf("rolloutmodel: blob %d, chunk %d and piece %d must be positive", c.Blob, c.Chunk, c.Piece)
	case c.Chunk%c.Piece != 0:
		return fmt.Errorf("rolloutmodel: chunk %d is not a multiple of piece %d", c.Chunk, c.Piece)
	case c.Nodes < 1:
		return fmt.Errorf("rolloutmodel: %d nodes, need at least 1", c.Nodes)
	case !(c.Link > 0) || math.IsInf(c.Link, 0):
		return fmt.Errorf("rolloutmodel: link %v must be a positive rate", c.Link)
	case mode != Warm && (!(c.Upstream > 0) || math.IsInf(c.Upstream, 0)):
		return fmt.Errorf("rolloutmodel: upstream %v must be a positive rate", c.Upstream)
	case c.Window < 1:
		return fmt.Errorf("rolloutmodel: window of %d chunks, need at least 1", c.Window)
	case c.Slots < 1:
		return fmt.Errorf("rolloutmodel: %d slots, need at least 1", c.Slots)
	case c.TieBreak != Scatter && c.TieBreak != Rotation:
		return fmt.Errorf("rolloutmodel: unknown tie-break %d", int(c.TieBreak))
	case c.Peers < 1 && c.Nodes > 1:
		return fmt.Errorf("rolloutmodel: %d peers, need at least 1", c.Peers)
	}
	return nil
}

// Result is what one run predicts. Node 0 is the owner (Cold, Star) or the
// seeder (Warm).
type Result struct {
	Done     []float64 // seconds until each node held the whole blob
	Uploaded []int64   // bytes each node sent to other nodes
	Received []int64   // bytes each node received, node 0's upstream bytes included
	Upstream int64     // bytes the upstream sent
	Round    float64   // seconds per round (Slots·P/L)
	Rounds   int
}

// Last is when the last node finished.
func (r Result) Last() float64 { return slices.Max(r.Done) }

// Median is the median finishing time of the nodes other than node 0
// (Kraken reports a p50).
func (r Result) Median() float64 {
	if len(r.Done) < 2 {
		return r.Done[0]
	}
	d := slices.Clone(r.Done[1:])
	slices.Sort(d)
	return d[(len(d)-1)/2]
}

// MaxUpload is the largest upload of one node, and which node it was.
func (r Result) MaxUpload() (node int, bytes int64) {
	for i, u := range r.Uploaded {
		if u > bytes {
			node, bytes = i, u
		}
	}
	return node, bytes
}

// errStuck means no piece can move although nodes still wait: the random
// graph is not connected.
var errStuck = errors.New("rolloutmodel: no piece can move; the peer graph is not connected")

// Run simulates one rollout. It is deterministic for a given Config.
func Run(cfg Config, mode Mode) (Result, error) {
	if err := cfg.validate(mode); err != nil {
		return Result{}, err
	}
	return newSim(cfg, mode).run()
}

// transfer is one piece moving from one node to another in a round.
type transfer struct{ from, to, piece int }

type sim struct {
	cfg  Config
	mode Mode
	rng  *rand.Rand

	pieces, perChunk int
	round            float64 // seconds per round
	fetchRate        float64 // node 0's upstream rate, min(U, L)

	have     []bitset
	inflight []bitset  // pieces a node is receiving this round
	holders  []int32   // nodes holding each piece
	left     []int     // pieces each node still lacks
	chunkGap [][]int32 // pieces each node lacks in each chunk
	cur      []int     // the lowest chunk each node lacks
	rot      []int     // per-node tie-break among equally rare pieces
	peers    [][]int32
	upFree   []int
	downFree []int
	stamp    []int // the round+1 in which downFree was last reset (Star)

	ownerHeld int // pieces node 0 holds (Cold, Star)
	published int // pieces of published chunks (a prefix)
	waiting   []int
	scratch   []uint64
	res       Result
}

func newSim(cfg Config, mode Mode) *sim {
	n := cfg.Nodes
	s := &sim{
		cfg:       cfg,
		mode:      mode,
		rng:       rand.New(rand.NewPCG(cfg.Seed, 0x726f6c6c6f7574)),
		pieces:    int((cfg.Blob + cfg.Piece - 1) / cfg.Piece),
		perChunk:  int(cfg.Chunk / cfg.Piece),
		round:     float64(cfg.Slots) * float64(cfg.Piece) / cfg.Link,
		fetchRate: min(cfg.Upstream, cfg.Link),
		have:      make([]bitset, n),
		inflight:  make([]bitset, n),
		left:      make([]int, n),
		chunkGap:  make([][]int32, n),
		cur:       make([]int, n),
		rot:       make([]int, n),
		upFree:    make([]int, n),
		downFree:  make([]int, n),
		stamp:     make([]int, n),
	}
	s.holders = make([]int32, s.pieces)
	chunks := (s.pieces + s.perChunk - 1) / s.perChunk
	for i := range n {
		s.have[i] = newBitset(s.pieces)
		s.inflight[i] = newBitset(s.pieces)
		s.left[i] = s.pieces
		s.chunkGap[i] = make([]int32, chunks)
		for k := range chunks {
			s.chunkGap[i][k] = int32(min(s.perChunk, s.pieces-k*s.perChunk))
		}
		s.rot[i] = s.rng.IntN(1 << 30)
	}
	s.res = Result{
		Done:     make([]float64, n),
		Uploaded: make([]int64, n),
		Received: make([]int64, n),
		Round:    s.round,
	}
	s.peers = s.graph()
	if mode == Warm {
		for p := range s.pieces {
			s.have[0].set(p)
			s.holders[p]++
		}
		s.left[0] = 0
		clear(s.chunkGap[0])
		s.published = s.pieces
	} else {
		s.res.Upstream = cfg.Blob
		s.res.Received[0] = cfg.Blob
		s.res.Done[0] = float64(cfg.Blob) / s.fetchRate
	}
	for i := 1; i < n; i++ {
		s.waiting = append(s.waiting, i)
	}
	return s
}

// graph connects every node to Peers/2 others drawn at random (so about
// Peers in all), or everyone to everyone when N is small.
func (s *sim) graph() [][]int32 {
	n := s.cfg.Nodes
	g := make([][]int32, n)
	if s.cfg.Peers >= n-1 {
		for i := range n {
			for j := range n {
				if i != j {
					g[i] = append(g[i], int32(j))
				}
			}
		}
		return g
	}
	linked := make([]map[int32]bool, n)
	for i := range linked {
		linked[i] = map[int32]bool{}
	}
	for i := range n {
		for len(linked[i]) < max(1, s.cfg.Peers/2) {
			j := int32(s.rng.IntN(n))
			if int(j) == i || linked[i][j] {
				continue
			}
			linked[i][j], linked[j][int32(i)] = true, true
		}
	}
	for i := range n {
		for j := range linked[i] {
			g[i] = append(g[i], j)
		}
		slices.Sort(g[i]) // map order is random; the run must not be
	}
	return g
}

func (s *sim) run() (Result, error) {
	// A generous bound: every piece to every node through one slot at a
	// time, after the whole upstream fetch.
	limit := int(float64(s.cfg.Blob)/s.fetchRate/s.round) + s.pieces*s.cfg.Nodes + 10
	for r := 0; len(s.waiting) > 0; r++ {
		if r > limit {
			return s.res, fmt.Errorf("rolloutmodel: no end after %d rounds", r)
		}
		t := float64(r) * s.round
		s.fetch(t)
		moves := s.assign()
		if len(moves) == 0 && s.ownerHeld == s.pieces && s.published == s.pieces {
			return s.res, errStuck
		}
		s.apply(moves, t+s.round)
		s.res.Rounds = r + 1
	}
	return s.res, nil
}

// fetch brings node 0's upstream download to time t and publishes every
// chunk whose bytes are all in.
func (s *sim) fetch(t float64) {
	if s.mode == Warm || s.ownerHeld == s.pieces {
		if s.mode == Warm {
			s.ownerHeld = s.pieces
		}
		return
	}
	got := int64(math.Floor(t*s.fetchRate + 1e-6))
	held := s.pieces
	if got < s.cfg.Blob {
		held = int(got / s.cfg.Piece)
	}
	for p := s.ownerHeld; p < held; p++ {
		s.have[0].set(p)
		s.holders[p]++
	}
	s.ownerHeld = held
	s.published = min(held/s.perChunk*s.perChunk, s.pieces)
	if held == s.pieces {
		s.published = s.pieces
	}
}

// assign lets the waiting nodes claim upload slots for this round: Slots
// passes over the nodes in a fresh random order, one piece per node per
// pass, so a busy uploader's slots are shared among the nodes that ask.
func (s *sim) assign() []transfer {
	if s.mode == Star {
		s.upFree[0] = s.cfg.Slots
		return s.assignStar()
	}
	for i := range s.upFree {
		s.upFree[i] = s.cfg.Slots
	}
	for _, i := range s.waiting {
		s.downFree[i] = s.cfg.Slots
	}
	s.rng.Shuffle(len(s.waiting), func(a, b int) {
		s.waiting[a], s.waiting[b] = s.waiting[b], s.waiting[a]
	})
	var moves []transfer
	for range s.cfg.Slots {
		progress := false
		for _, i := range s.waiting {
			if s.downFree[i] == 0 {
				continue
			}
			p, j := s.pick(i)
			if p < 0 {
				// Slots only fill up within a round: nothing now is
				// nothing for the rest of it.
				s.downFree[i] = 0
				continue
			}
			s.inflight[i].set(p)
			s.downFree[i]--
			s.upFree[j]--
			moves = append(moves, transfer{from: j, to: i, piece: p})
			progress = true
		}
		if !progress {
			break
		}
	}
	return moves
}

// pick returns the rarest piece of node i's window that a peer with a free
// upload slot holds, and that peer; -1 when there is none.
func (s *sim) pick(i int) (piece, from int) {
	lo := s.cur[i] * s.perChunk
	hi := min(lo+s.cfg.Window*s.perChunk, s.published)
	if lo >= hi {
		return -1, -1
	}
	w0, w1 := lo/64, (hi-1)/64
	avail := s.scratch[:0]
	for range w1 - w0 + 1 {
		avail = append(avail, 0)
	}
	s.scratch = avail
	for _, j := range s.peers[i] {
		if s.upFree[j] == 0 {
			continue
		}
		for w := w0; w <= w1; w++ {
			avail[w-w0] |= s.have[j][w]
		}
	}
	best, bestRare, bestTie := -1, int32(math.MaxInt32), math.MaxInt
	span := hi - lo
	for w := w0; w <= w1; w++ {
		m := avail[w-w0] &^ s.have[i][w] &^ s.inflight[i][w] & rangeMask(w, lo, hi)
		for m != 0 {
			b := bits.TrailingZeros64(m)
			m &= m - 1
			p := w*64 + b
			tie := (p - lo + s.rot[i]) % span
			if s.cfg.TieBreak == Scatter {
				tie = int(mix(uint64(s.rot[i])<<32|uint64(p)) >> 2)
			}
			if h := s.holders[p]; h < bestRare || h == bestRare && tie < bestTie {
				best, bestRare, bestTie = p, h, tie
			}
		}
	}
	if best < 0 {
		return -1, -1
	}
	// The holder with the most free slots, so that load spreads; among
	// those, one drawn by a hash, so that node 0 (first in every list) is
	// not everyone's default.
	from, fromTie := -1, uint64(0)
	for _, j := range s.peers[i] {
		if s.upFree[j] == 0 || !s.have[j].has(best) {
			continue
		}
		tie := mix(uint64(s.rot[i])<<32 ^ uint64(j)<<12 ^ uint64(best))
		if from < 0 || s.upFree[j] > s.upFree[from] || s.upFree[j] == s.upFree[from] && tie < fromTie {
			from, fromTie = int(j), tie
		}
	}
	return best, from
}

// mix is SplitMix64's finalizer: a cheap, well-spread hash.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// assignStar gives node 0's slots to the waiting nodes in turn, one piece
// per visit, each the next piece of the node's in-order stream that node 0
// already holds. Only node 0 uploads, so only the nodes visited are touched:
// the star runs N times as many rounds as the swarm.
func (s *sim) assignStar() []transfer {
	var moves []transfer
	n := len(s.waiting)
	// Rotate who asks first, so node 0's slots go round the nodes.
	start := s.res.Rounds * s.cfg.Slots % n
	idle := 0
	for k := start; s.upFree[0] > 0 && idle < n; k++ {
		i := s.waiting[k%n]
		if s.stamp[i] != s.res.Rounds+1 {
			s.stamp[i] = s.res.Rounds + 1
			s.downFree[i] = s.cfg.Slots
		}
		p := s.pieces - s.left[i] + (s.cfg.Slots - s.downFree[i])
		if s.downFree[i] == 0 || p >= s.ownerHeld {
			idle++
			continue
		}
		idle = 0
		s.downFree[i]--
		s.upFree[0]--
		moves = append(moves, transfer{from: 0, to: i, piece: p})
	}
	return moves
}

// apply lands this round's pieces at time end.
func (s *sim) apply(moves []transfer, end float64) {
	finished := false
	for _, m := range moves {
		size := min(s.cfg.Piece, s.cfg.Blob-int64(m.piece)*s.cfg.Piece)
		s.inflight[m.to].clear(m.piece)
		s.have[m.to].set(m.piece)
		s.holders[m.piece]++
		s.res.Uploaded[m.from] += size
		s.res.Received[m.to] += size
		s.left[m.to]--
		k := m.piece / s.perChunk
		s.chunkGap[m.to][k]--
		for s.cur[m.to] < len(s.chunkGap[m.to]) && s.chunkGap[m.to][s.cur[m.to]] == 0 {
			s.cur[m.to]++
		}
		if s.left[m.to] == 0 {
			s.res.Done[m.to] = end
			finished = true
		}
	}
	if finished {
		s.waiting = slices.DeleteFunc(s.waiting, func(i int) bool { return s.left[i] == 0 })
	}
}
