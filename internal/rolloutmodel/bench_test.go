package rolloutmodel

import (
	"fmt"
	"io"
	"os"
	"testing"
)

// The benchmarks below print the tables of docs/benchmarks.md ("Model:
// rollout time at N = 100 and 1,000"); run each with -benchtime 1x. Their
// ns/op is the simulation's own cost, not a prediction.

// BenchmarkModel prints star, pipelined cold and warm at 200 Mbit/s, for
// the swarm as built (DefaultConfig).
func BenchmarkModel(b *testing.B) {
	printTable(b, func(w io.Writer) {
		fmt.Fprintln(w, "| blob | N | star, cold | swarm, cold (p50) | swarm, warm (p50) | upload, cold: node 0 / others' max | upload, warm: node 0 / others' max | upstream, cold |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
		for _, blob := range []int64{128 << 20, 1 << 30} {
			for _, n := range []int{4, 8, 16, 50, 100, 1000} {
				cfg := DefaultConfig(blob, n)
				star, cold, warm := mustRun(b, cfg, Star), mustRun(b, cfg, Cold), mustRun(b, cfg, Warm)
				fmt.Fprintf(w, "| %d MiB | %d | %s | %s (%s) | %s (%s) | %s | %s | %.2f B |\n",
					blob>>20, n, secs(cfg, star.Last()), secs(cfg, cold.Last()), times(cfg, cold.Median()),
					secs(cfg, warm.Last()), times(cfg, warm.Median()),
					uploads(cold, blob), uploads(warm, blob), frac(cold.Upstream, blob))
			}
		}
	})
}

// BenchmarkModelMeasured runs the model at the link-capped cluster's
// setups (BenchmarkRollout in e2e: 128 MiB, links and upstream at the
// rate each N ran at in docs/benchmarks.md, "Issue 13 at the end"), to set
// beside what the cluster measured.
func BenchmarkModelMeasured(b *testing.B) {
	setups := []struct {
		nodes int
		mbit  float64
	}{{4, 12}, {8, 12}, {16, 6}}
	printTable(b, func(w io.Writer) {
		fmt.Fprintln(w, "| N | link | swarm, cold | swarm, warm | upload, cold: node 0 / others' max | upload, warm: node 0 / others' max |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|")
		for _, s := range setups {
			cfg := DefaultConfig(128<<20, s.nodes)
			cfg.Link, cfg.Upstream = s.mbit*Mbit, s.mbit*Mbit
			cold, warm := mustRun(b, cfg, Cold), mustRun(b, cfg, Warm)
			fmt.Fprintf(w, "| %d | %g Mbit/s | %s | %s | %s | %s |\n", s.nodes, s.mbit, secs(cfg, cold.Last()), secs(cfg, warm.Last()), uploads(cold, cfg.Blob), uploads(warm, cfg.Blob))
		}
	})
}

// BenchmarkModelChoices prints how the design's choices move the
// pipelined cold and the warm time at N = 8, 100 and 1,000.
func BenchmarkModelChoices(b *testing.B) {
	variants := []struct {
		name string
		edit func(*Config)
	}{
		{"as built: C = swarm.ChunkBytes, window of one chunk missing (≤ 8 chunks), index order and the designee rule up to 51 nodes, the wide fallback beyond, 4 slots, 50 peers", func(*Config) {}},
		{"the designee rule at any N (main before the wide fallback)", func(c *Config) { c.WideFallback = false }},
		{"the designee rule, every node connected to every other (peers = N − 1)", func(c *Config) { c.Peers = c.Nodes }},
		{"no designee rule, index order, at any N", func(c *Config) { c.Designee, c.WideFallback = false, false }},
		{"grace 0.6 s, no fallback", func(c *Config) { c.Grace, c.WideFallback = 0.6, false }},
		{"window 4 chunks", func(c *Config) { c.WindowMissing, c.Window = false, 4 }},
		{"C = 16 MiB", func(c *Config) { c.Chunk = 16 << 20 }},
		{"C = 32 MiB", func(c *Config) { c.Chunk = 32 << 20 }},
		{"the swarm of 2026-12-05: window 4 chunks, scattered order, no designee", func(c *Config) { *c = Scattered(c.Blob, c.Nodes) }},
	}
	printTable(b, func(w io.Writer) {
		fmt.Fprintln(w, "| blob | variant | cold N=8 | cold N=100 | cold N=1000 | warm N=8 | warm N=100 | warm N=1000 | node 0's upload, cold N=1000 |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
		for _, blob := range []int64{128 << 20} {
			for _, v := range variants {
				var cells []any
				var up int64
				for _, mode := range []Mode{Cold, Warm} {
					for _, n := range []int{8, 100, 1000} {
						cfg := DefaultConfig(blob, n)
						v.edit(&cfg)
						r := mustRun(b, cfg, mode)
						cells = append(cells, times(cfg, r.Last()))
						if mode == Cold && n == 1000 {
							up = r.Uploaded[0]
						}
					}
				}
				fmt.Fprintf(w, "| %d MiB | %s | %s | %s | %s | %s | %s | %s | %.2f B |\n", append(append([]any{blob >> 20, v.name}, cells...), frac(up, blob))...)
			}
		}
	})
}

// BenchmarkModelKraken runs the model at Kraken's published setup: 3 GB to
// 2,600 hosts, 300 MB/s per agent (the upstream too), one seeder: the
// swarm as built (its wide fallback, at that size) and the swarm of
// 2026-12-05 with a window of 2 and 4 chunks.
func BenchmarkModelKraken(b *testing.B) {
	printTable(b, func(w io.Writer) {
		fmt.Fprintln(w, "| 3 GB, N = 2,600, 300 MB/s | last | p50 | max upload |")
		fmt.Fprintln(w, "|---|---|---|---|")
		row := func(name string, cfg Config, mode Mode) {
			cfg.Link, cfg.Upstream = 300e6, 300e6
			r := mustRun(b, cfg, mode)
			_, up := r.MaxUpload()
			fmt.Fprintf(w, "| %s, %v | %s | %s | %.2f B |\n", name, mode, secs(cfg, r.Last()), secs(cfg, r.Median()), frac(up, cfg.Blob))
		}
		for _, mode := range []Mode{Cold, Warm} {
			row("swarm as built", DefaultConfig(3e9, 2600), mode)
		}
		for _, window := range []int{2, 4} {
			for _, mode := range []Mode{Cold, Warm} {
				cfg := Scattered(3e9, 2600)
				cfg.Window = window
				row(fmt.Sprintf("swarm of 2026-12-05, window %d chunks", window), cfg, mode)
			}
		}
	})
}

// printTable runs print once per benchmark iteration, writing the first
// run's table to stdout and the others' nowhere.
func printTable(b *testing.B, print func(w io.Writer)) {
	printed := false
	for b.Loop() {
		w := io.Discard
		if !printed {
			w, printed = os.Stdout, true
		}
		print(w)
	}
}

func mustRun(b *testing.B, cfg Config, mode Mode) Result {
	b.Helper()
	r, err := Run(cfg, mode)
	if err != nil {
		b.Fatalf("Run(%+v, %v): %v", cfg, mode, err)
	}
	return r
}

// secs is a time and its multiple of one transfer, B/min(U,L).
func secs(cfg Config, t float64) string {
	return fmt.Sprintf("%.1f s = %s", t, times(cfg, t))
}

func times(cfg Config, t float64) string {
	return fmt.Sprintf("%.2fx", t/(float64(cfg.Blob)/min(cfg.Link, cfg.Upstream)))
}

// uploads is node 0's upload and the largest of the others', in blobs.
func uploads(r Result, blob int64) string {
	var most int64
	for _, u := range r.Uploaded[1:] {
		most = max(most, u)
	}
	return fmt.Sprintf("%.2f B / %.2f B", frac(r.Uploaded[0], blob), frac(most, blob))
}

func frac(n, blob int64) float64 { return float64(n) / float64(blob) }
