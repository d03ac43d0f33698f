package rolloutmodel

import (
	"errors"
	"math"
	"slices"
	"testing"
)

// small is a blob the tests can run many times: 64 MiB in 256 KiB pieces
// and 16 MiB chunks, on 200 Mbit/s links.
func small(nodes int) Config {
	c := DefaultConfig(64<<20, nodes)
	c.Chunk = 16 << 20
	return c
}

func run(t *testing.T, cfg Config, mode Mode) Result {
	t.Helper()
	r, err := Run(cfg, mode)
	if err != nil {
		t.Fatalf("Run(%+v, %v): %v", cfg, mode, err)
	}
	return r
}

func TestOneNodeTakesOneTransfer(t *testing.T) {
	for _, tc := range []struct {
		name           string
		link, upstream float64
	}{
		{"link equals upstream", 200 * Mbit, 200 * Mbit},
		{"upstream slower", 200 * Mbit, 50 * Mbit},
		{"link slower", 100 * Mbit, 1000 * Mbit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := small(1)
			cfg.Link, cfg.Upstream = tc.link, tc.upstream
			want := float64(cfg.Blob) / min(tc.link, tc.upstream)
			for _, mode := range []Mode{Cold, Star} {
				r := run(t, cfg, mode)
				if r.Last() != want || r.Upstream != cfg.Blob {
					t.Errorf("%v: last %.3f s, upstream %d; want %.3f s = B/min(U,L), upstream %d", mode, r.Last(), r.Upstream, want, cfg.Blob)
				}
			}
			if r := run(t, cfg, Warm); r.Last() != 0 || r.Upstream != 0 {
				t.Errorf("warm: last %.3f s, upstream %d; want 0, 0 (the one node is the seeder)", r.Last(), r.Upstream)
			}
		})
	}
}

func TestStarGrowsLinearlyWithN(t *testing.T) {
	for _, n := range []int{3, 4, 8, 16, 32} {
		cfg := small(n)
		r := run(t, cfg, Star)
		// Node 0's uplink carries N−1 copies; the rounds add at most a few
		// rounds of quantisation.
		want := float64(n-1) * float64(cfg.Blob) / cfg.Link
		if got := r.Last(); got < want || got > want+2*r.Round {
			t.Errorf("N=%d: star last %.2f s, want %.2f s = (N−1)·B/L (+ 2 rounds of %.3f s)", n, got, want, r.Round)
		}
		if r.Uploaded[0] != int64(n-1)*cfg.Blob {
			t.Errorf("N=%d: node 0 uploaded %d, want (N−1)·B = %d", n, r.Uploaded[0], int64(n-1)*cfg.Blob)
		}
	}
}

func TestBytesAreConserved(t *testing.T) {
	for _, mode := range []Mode{Cold, Warm, Star} {
		for _, n := range []int{1, 2, 5, 16, 60} {
			cfg := small(n)
			cfg.Peers = 8         // a sparse graph for N=60
			cfg.Blob -= 100 << 10 // a short last piece and a short last chunk
			r := run(t, cfg, mode)
			var up, got int64
			for i := range n {
				up += r.Uploaded[i]
				got += r.Received[i]
				if want := cfg.Blob; (mode != Warm || i != 0) && r.Received[i] != want {
					t.Errorf("%v N=%d: node %d received %d, want exactly B = %d (no piece twice)", mode, n, i, r.Received[i], want)
				}
			}
			if got != up+r.Upstream {
				t.Errorf("%v N=%d: received %d, want uploaded %d + upstream %d", mode, n, got, up, r.Upstream)
			}
			wantUp := cfg.Blob
			if mode == Warm {
				wantUp = 0
			}
			if r.Upstream != wantUp {
				t.Errorf("%v N=%d: upstream %d, want %d", mode, n, r.Upstream, wantUp)
			}
		}
	}
}

func TestPipelinedColdIsOneTransferPlusAChunk(t *testing.T) {
	for _, blob := range []int64{128 << 20, 1 << 30} {
		cfg := DefaultConfig(blob, 8)
		r := run(t, cfg, Cold)
		// The last chunk is published when node 0 has the whole blob, and
		// every node still needs all of it: nobody finishes sooner.
		floor := float64(blob)/min(cfg.Link, cfg.Upstream) + float64(cfg.Chunk)/cfg.Link
		if got := r.Last(); got < floor || got > 1.2*floor {
			t.Errorf("B=%d MiB: cold at N=8 took %.2f s, want within [1, 1.2] × (B/min(U,L) + C/L) = %.2f s", blob>>20, got, floor)
		}
		if star := run(t, cfg, Star); r.Last() > star.Last()/4 {
			t.Errorf("B=%d MiB: cold %.2f s, star %.2f s: the swarm should be far faster", blob>>20, r.Last(), star.Last())
		}
	}
}

func TestNoNodeUploadsTwiceTheBlob(t *testing.T) {
	for _, n := range []int{4, 8, 16, 100} {
		cfg := small(n)
		for _, mode := range []Mode{Cold, Warm} {
			r := run(t, cfg, mode)
			if node, up := r.MaxUpload(); up > 2*cfg.Blob {
				t.Errorf("%v N=%d: node %d uploaded %.2f B, want at most 2 B", mode, n, node, float64(up)/float64(cfg.Blob))
			}
			if got, limit := r.Last(), 1.3*float64(cfg.Blob)/cfg.Link+float64(cfg.Chunk)/cfg.Link; got > limit {
				t.Errorf("%v N=%d: last %.2f s, want under 1.3·B/L + C/L = %.2f s", mode, n, got, limit)
			}
		}
	}
}

func TestRotationTieBreakIsSlower(t *testing.T) {
	// Two nodes that get the same piece from the seeder walk the window in
	// step after it, and keep asking for the same pieces: the seeder's
	// uplink carries duplicates.
	cfg := Scattered(1<<30, 8)
	scatter := run(t, cfg, Warm)
	cfg.TieBreak = Rotation
	rotation := run(t, cfg, Warm)
	if rotation.Last() <= scatter.Last() || rotation.Uploaded[0] <= scatter.Uploaded[0] {
		t.Errorf("rotation %.2f s with the seeder sending %d; scatter %.2f s, %d: want rotation slower, the seeder sending more", rotation.Last(), rotation.Uploaded[0], scatter.Last(), scatter.Uploaded[0])
	}
}

func TestRunIsDeterministic(t *testing.T) {
	cfg := small(40)
	cfg.Peers = 10
	a, b := run(t, cfg, Cold), run(t, cfg, Cold)
	if !slices.Equal(a.Done, b.Done) || !slices.Equal(a.Uploaded, b.Uploaded) {
		t.Errorf("two runs of one config differ: %v / %v", a.Done, b.Done)
	}
}

func TestDisconnectedGraphFails(t *testing.T) {
	// With one link drawn per node, 200 nodes split into parts (a random
	// graph with N edges is connected with vanishing probability); the run
	// must end with an error, not spin.
	for seed := range uint64(5) {
		cfg := small(200)
		cfg.Peers, cfg.Seed = 1, seed
		if _, err := Run(cfg, Warm); !errors.Is(err, errStuck) {
			t.Errorf("seed %d: Run on a split graph: %v, want errStuck", seed, err)
		}
	}
}

func TestBadConfigIsRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		mode Mode
	}{
		{"no blob", func(c *Config) { c.Blob = 0 }, Cold},
		{"negative piece", func(c *Config) { c.Piece = -1 }, Cold},
		{"chunk not a multiple of piece", func(c *Config) { c.Chunk = c.Piece*3 + 1 }, Cold},
		{"no nodes", func(c *Config) { c.Nodes = 0 }, Cold},
		{"zero link", func(c *Config) { c.Link = 0 }, Warm},
		{"NaN link", func(c *Config) { c.Link = math.NaN() }, Warm},
		{"infinite upstream", func(c *Config) { c.Upstream = math.Inf(1) }, Cold},
		{"no upstream for a star", func(c *Config) { c.Upstream = 0 }, Star},
		{"no slots", func(c *Config) { c.Slots = 0 }, Warm},
		{"no window", func(c *Config) { c.Window = 0 }, Warm},
		{"no peers", func(c *Config) { c.Peers = 0 }, Warm},
		{"unknown tie-break", func(c *Config) { c.TieBreak = 7 }, Warm},
		{"negative grace", func(c *Config) { c.Grace = -1 }, Warm},
		{"infinite grace", func(c *Config) { c.Grace = math.Inf(1) }, Warm},
		{"unknown mode", func(*Config) {}, Mode(9)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := small(4)
			tc.edit(&cfg)
			if _, err := Run(cfg, tc.mode); err == nil {
				t.Errorf("Run(%+v, %v): no error", cfg, tc.mode)
			}
		})
	}
}

// The designee rule decides from the downloaders a node is connected to.
// Beyond MaxConns + 1 nodes each sees a part of them, and no node connected
// to the seeder may be the designee of a piece (another it sees outranks
// it, and that one is not connected to the seeder): such a piece leaves the
// seeder only when a node has waited Grace on it. The model shows what
// that costs, and that the swarm's wide fallback (no rule, a scattered
// order; swarm/window.go) avoids it (docs/benchmarks.md).
func TestDesigneeRuleNeedsEveryDownloaderInView(t *testing.T) {
	full := small(100)
	full.Peers = 100
	part := small(100) // 50 peers each
	part.WideFallback = false
	a, b := run(t, full, Warm), run(t, part, Warm)
	if a.Last() > 2*float64(full.Blob)/full.Link {
		t.Errorf("every node in view: warm N=100 took %.2f s, want under 2 transfers (%.2f s)", a.Last(), 2*float64(full.Blob)/full.Link)
	}
	if b.Last() < 3*a.Last() {
		t.Errorf("50 peers of 99: warm N=100 took %.2f s against %.2f s with every node in view; the model should show the rule's collapse", b.Last(), a.Last())
	}
	part.WideFallback = true // what the swarm does there
	for _, mode := range []Mode{Cold, Warm} {
		if c := run(t, part, mode); c.Last() > 1.3*float64(full.Blob)/full.Link+float64(full.Chunk)/full.Link {
			t.Errorf("50 peers, the wide fallback (no designee rule, scattered order): %v %.2f s, want under 1.3·B/L + C/L", mode, c.Last())
		}
	}
}
