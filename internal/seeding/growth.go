package seeding

import (
	"io"
	"log/slog"
	"os"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/egress"
)

// GrowFunc starts seeding a blob whose file grows in order
// (swarm.(*Swarm).Grow); its *swarm.Growth is the Progress.
type GrowFunc func(dgst digest.Digest, size int64, file io.ReaderAt) (egress.Progress, error)

// Growing returns the egress fetcher's OnStart: a download from the
// upstream is seeded to the cluster while it arrives, so nodes waiting for
// it follow it in the swarm and trade its pieces instead of each streaming
// it from this node. The blob is announced partial at once, never
// complete, until its digest matched: then the growth is the seed, and the
// seed loop gets its file (EgressGrown) to seed from, so the blob is
// seeded once. Blobs smaller than min are not grown (they go whole over
// HTTP; egress.SourceConfig.PipelineMin).
func (s *Seeder) Growing(grow GrowFunc, min int64) func(d digest.Digest, size int64, path string) egress.Progress {
	g := &growing{grow: grow, tracker: s.tracker, seeds: s, min: min, log: s.log}
	return g.start
}

// growing runs on the download's goroutine and returns promptly: Grow
// hashes on its own goroutine, and the tracker calls memberlist outside its
// lock. It announces itself rather than wait for the announcer, which
// then checks those digests again (announcedElsewhere).
type growing struct {
	grow    GrowFunc
	tracker Announcer
	seeds   *Seeder
	min     int64
	log     *slog.Logger
}

func (g *growing) start(d digest.Digest, size int64, path string) egress.Progress {
	if g.grow == nil || d.Algorithm() != digest.SHA256 || size < g.min || size <= 0 {
		return nil // torrents and gossip are keyed by sha256; small blobs go whole over HTTP
	}
	file, err := os.Open(path)
	if err != nil {
		g.log.Warn("not seeding a download while it arrives", "digest", d, "err", err)
		return nil
	}
	p, err := g.grow(d, size, file)
	if err != nil {
		_ = file.Close()
		g.log.Warn("not seeding a download while it arrives", "digest", d, "err", err)
		return nil
	}
	if err := g.tracker.Announce(d, false); err != nil {
		g.log.Warn("announce download", "digest", d, "err", err)
	}
	g.seeds.announcedElsewhere(d)
	return &growthProgress{g: g, dgst: d, file: file, growth: p}
}

// growthProgress is one growing download: it passes the fetcher's calls
// on to the swarm's growth and owns the file the growth reads until the
// seed loop takes it.
type growthProgress struct {
	g      *growing
	dgst   digest.Digest
	file   *os.File
	growth egress.Progress
}

func (p *growthProgress) Advance(n int64) { p.growth.Advance(n) }

// Complete makes the growth a seed, then hands its file to the seed loop,
// which seeds the verified spool from it (a Seed of the same blob keeps
// the growth's torrents: nothing is hashed or added twice).
func (p *growthProgress) Complete() {
	p.growth.Complete()
	p.g.seeds.EgressGrown(p.dgst, p.file)
}

// Fail drops the growth and its partial announcement; the announcer then
// puts back what the swarm still serves of the digest (containerd's copy
// seeded meanwhile). The file closes later: torrent reads in flight may
// still hold it.
func (p *growthProgress) Fail(err error) {
	p.growth.Fail(err)
	if werr := p.g.tracker.Withdraw(p.dgst); werr != nil {
		p.g.log.Warn("withdraw failed download", "digest", p.dgst, "err", werr)
	}
	p.g.seeds.announcedElsewhere(p.dgst)
	closeLater(p.file.Close)
}
