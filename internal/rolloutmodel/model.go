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
	// pieces from: the stream's current chunk and the next. With
	// WindowMissing it is the most chunks the window may span.
	Window int
	// WindowMissing makes the window, as swarm/window.go does since
	// 71b578a, the chunks from the lowest one a node lacks on, as many as
	// it takes for one chunk's pieces to be missing (at most Window).
	WindowMissing bool
	// TieBreak orders pieces of equal rarity, per node.
	TieBreak TieBreak
	// Designee is the swarm's rule for a piece that, among a node's peers,
	// only nodes holding its whole chunk have (seeders of the chunk's
	// torrent; node 0, first of all): one downloader per piece asks a
	// seeder for it, the one whose hash of node and piece is lowest among
	// the chunk's downloaders the asking node sees, itself included; the
	// others take it from a downloader that holds it, or from a seeder
	// once it is their next missing piece and they waited Grace for it
	// (third_party/anacrolix-torrent/dregistry_seeder.go).
	Designee bool
	// Grace is the seconds a node waits on its next piece before it asks a
	// seeder that is not its to ask (Designee).
	Grace float64
	// WideFallback is the swarm's answer to a cluster wider than a node's
	// connections (swarm/window.go): with more than Peers + 1 nodes, no
	// designee rule and a per-node scattered order (TieBreak Scatter).
	WideFallback bool
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
	// Index takes equally rare pieces in index order, the stream's, as the
	// swarm does since 0638241 (the designee rule spreads the nodes).
	Index
)

func (t TieBreak) String() string {
	switch t {
	case Rotation:
		return "rotation"
	case Index:
		return "index"
	}
	return "scatter"
}

// Mbit is one megabit per second in bytes per second.
const Mbit = 1e6 / 8

// DefaultConfig is the swarm as built, in the setup of issue 13's
// measurements: 200 Mbit/s links and upstream, the swarm's chunk and piece
// lengths for the blob's size, a window of one chunk's missing pieces over
// at most 8 chunks (swarm/window.go), rarest first then index order, the
// designee rule with a grace of 1.5 s (nowGrace), 4 upload slots and 50
// connections per node (swarm.Config.MaxConns).
func DefaultConfig(blob int64, nodes int) Config {
	return Config{
		Blob:          blob,
		Chunk:         swarm.ChunkBytes(blob),
		Piece:         swarm.PieceLength(blob),
		Nodes:         nodes,
		Link:          200 * Mbit,
		Upstream:      200 * Mbit,
		Slots:         4,
		Peers:         50,
		Window:        8,
		WindowMissing: true,
		TieBreak:      Index,
		Designee:      true,
		Grace:         1.5,
		WideFallback:  true,
		Seed:          1,
	}
}

// Scattered is the swarm of 2026-12-05 (824c790), which the first tables
// of this model described: a window of 4 chunks, a per-node scattered
// order among equally rare pieces, no designee rule.
func Scattered(blob int64, nodes int) Config {
	c := DefaultConfig(blob, nodes)
	c.Window, c.WindowMissing, c.TieBreak, c.Designee, c.Grace, c.WideFallback = 4, false, Scatter, false, 0, false
	return c
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
	case c.TieBreak != Scatter && c.TieBreak != Rotation && c.TieBreak != Index:
		return fmt.Errorf("rolloutmodel: unknown tie-break %d", int(c.TieBreak))
	case c.Grace < 0 || math.IsNaN(c.Grace) || math.IsInf(c.Grace, 0):
		return fmt.Errorf("rolloutmodel: grace %v must be a finite, non-negative time", c.Grace)
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
	if cfg.WideFallback && cfg.Nodes-1 > cfg.Peers {
		cfg.Designee, cfg.TieBreak = false, Scatter
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
	seeded    []uint64 // pick's scratch: pieces only peers holding their whole chunk offer
	res       Result

	// The designee rule (Config.Designee).
	now       float64
	winHi     []int     // each node's window end (a piece index), this round
	next      []int     // each node's lowest missing piece
	nextSince []float64 // since when it has waited on next
	pubAt     []float64 // when each chunk was published
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
		winHi:     make([]int, n),
		next:      make([]int, n),
		nextSince: make([]float64, n),
	}
	s.holders = make([]int32, s.pieces)
	chunks := (s.pieces + s.perChunk - 1) / s.perChunk
	s.pubAt = make([]float64, chunks)
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
	// Under the designee rule a round may move nothing while nodes wait
	// out Grace; stuck is nothing moving for longer.
	idle, patience := 0, int(s.cfg.Grace/s.round)+1
	for r := 0; len(s.waiting) > 0; r++ {
		if r > limit {
			return s.res, fmt.Errorf("rolloutmodel: no end after %d rounds", r)
		}
		t := float64(r) * s.round
		s.now = t
		s.fetch(t)
		moves := s.assign()
		if len(moves) > 0 || s.ownerHeld < s.pieces {
			idle = 0
		} else if idle++; idle > patience {
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
		s.chunkGap[0][p/s.perChunk]--
	}
	s.ownerHeld = held
	was := s.published
	s.published = min(held/s.perChunk*s.perChunk, s.pieces)
	if held == s.pieces {
		s.published = s.pieces
	}
	for k := (was + s.perChunk - 1) / s.perChunk; k*s.perChunk < s.published; k++ {
		s.pubAt[k] = t
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
		s.winHi[i] = s.windowEnd(i)
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

// windowEnd is the end (a piece index, exclusive) of node i's window: from
// the lowest chunk it lacks, Window chunks, or with WindowMissing as many
// as it takes for one chunk's pieces to be missing (at most Window); only
// published pieces count.
func (s *sim) windowEnd(i int) int {
	k, end := s.cur[i], s.cur[i]+s.cfg.Window
	if s.cfg.WindowMissing {
		missing := int32(0)
		for end = k; end < k+s.cfg.Window && end < len(s.chunkGap[i]) && missing < int32(s.perChunk); end++ {
			missing += s.chunkGap[i][end]
		}
	}
	return min(end*s.perChunk, s.published)
}

// pick returns the rarest piece of node i's window that a peer with a free
// upload slot may send it, and that peer; -1 when there is none. Under the
// designee rule a peer holding the piece's whole chunk (a seeder of it) may
// send it only to its designee, or to a node that waited Grace on it.
func (s *sim) pick(i int) (piece, from int) {
	lo := s.cur[i] * s.perChunk
	hi := s.winHi[i]
	if lo >= hi {
		return -1, -1
	}
	avail, seeded := s.available(i, lo, hi)
	best, onlySeeded := s.choose(i, lo, hi, avail, seeded)
	if best < 0 {
		return -1, -1
	}
	return best, s.source(i, best, onlySeeded)
}

// available fills the words of [lo, hi) that node i's peers with a free
// upload slot offer: from downloaders (avail) and, under the designee rule,
// from peers holding the piece's whole chunk (seeded), by chunk.
func (s *sim) available(i, lo, hi int) (avail, seeded []uint64) {
	w0, w1 := lo/64, (hi-1)/64
	avail, seeded = s.scratch[:0], s.seeded[:0]
	for range w1 - w0 + 1 {
		avail, seeded = append(avail, 0), append(seeded, 0)
	}
	s.scratch, s.seeded = avail, seeded
	for _, j := range s.peers[i] {
		if s.upFree[j] == 0 {
			continue
		}
		if !s.cfg.Designee {
			for w := w0; w <= w1; w++ {
				avail[w-w0] |= s.have[j][w]
			}
			continue
		}
		for k := lo / s.perChunk; k*s.perChunk < hi; k++ {
			clo, chi := k*s.perChunk, min((k+1)*s.perChunk, hi)
			into := avail
			if s.chunkGap[j][k] == 0 {
				into = seeded
			}
			for w := clo / 64; w <= (chi-1)/64; w++ {
				into[w-w0] |= s.have[j][w] & rangeMask(w, clo, chi)
			}
		}
	}
	return avail, seeded
}

// choose returns the rarest piece of [lo, hi) node i lacks and may have
// (ties broken by TieBreak), and whether only seeders offer it.
func (s *sim) choose(i, lo, hi int, avail, seeded []uint64) (best int, onlySeeded bool) {
	w0 := lo / 64
	best, bestRare, bestTie := -1, int32(math.MaxInt32), math.MaxInt
	span := hi - lo
	for w := w0; w <= (hi-1)/64; w++ {
		m := (avail[w-w0] | seeded[w-w0]) &^ s.have[i][w] &^ s.inflight[i][w] & rangeMask(w, lo, hi)
		for m != 0 {
			b := bits.TrailingZeros64(m)
			m &= m - 1
			p := w*64 + b
			var tie int
			switch s.cfg.TieBreak {
			case Scatter:
				tie = int(mix(uint64(s.rot[i])<<32|uint64(p)) >> 2)
			case Rotation:
				tie = (p - lo + s.rot[i]) % span
			case Index:
				tie = p
			}
			if h := s.holders[p]; !(h < bestRare || h == bestRare && tie < bestTie) {
				continue
			}
			seededOnly := avail[w-w0]&(1<<b) == 0
			if seededOnly && !s.maySeed(i, p) {
				continue
			}
			best, bestRare, bestTie, onlySeeded = p, s.holders[p], tie, seededOnly
		}
	}
	return best, onlySeeded
}

// source returns the peer node i takes piece best from: the holder with
// the most free slots, so that load spreads; among those, one drawn by a
// hash, so that node 0 (first in every list) is not everyone's default.
// Under the designee rule a seeder only when no downloader offers it.
func (s *sim) source(i, best int, onlySeeded bool) int {
	k := best / s.perChunk
	from, fromTie := -1, uint64(0)
	for _, j := range s.peers[i] {
		if s.upFree[j] == 0 || !s.have[j].has(best) {
			continue
		}
		if s.cfg.Designee && !onlySeeded && s.chunkGap[j][k] == 0 {
			continue
		}
		tie := mix(uint64(s.rot[i])<<32 ^ uint64(j)<<12 ^ uint64(best))
		if from < 0 || s.upFree[j] > s.upFree[from] || s.upFree[j] == s.upFree[from] && tie < fromTie {
			from, fromTie = int(j), tie
		}
	}
	return from
}

// maySeed tells whether node i may ask a seeder (a peer holding the whole
// chunk) for piece p: it is p's designee among the chunk's downloaders it
// sees (itself and its waiting peers whose window reached the chunk), or p
// is its next missing piece and it waited Grace on it.
func (s *sim) maySeed(i, p int) bool {
	if p == s.next[i] && s.now-max(s.nextSince[i], s.pubAt[p/s.perChunk]) >= s.cfg.Grace {
		return true
	}
	k := p / s.perChunk
	mine := mix(uint64(i)<<32 | uint64(p))
	for _, j := range s.peers[i] {
		if s.left[j] == 0 || s.chunkGap[j][k] == 0 || s.winHi[j] <= k*s.perChunk || s.cur[j] > k {
			continue
		}
		if mix(uint64(j)<<32|uint64(p)) < mine {
			return false
		}
	}
	return true
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
		if m.piece == s.next[m.to] {
			for s.next[m.to] < s.pieces && s.have[m.to].has(s.next[m.to]) {
				s.next[m.to]++
			}
			s.nextSince[m.to] = end
		}
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
