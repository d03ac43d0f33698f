package swarm

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/diskcache"
)

// The data dir is a cache bounded by Config.Cache (--cache-size): every
// download is admitted into it before its files are made, pinned while a
// Blob handle of it is open, and evicted (dropped, its files deleted),
// least recently used first, when a newer one needs the room. A download
// that does not fit beside the pinned ones fails its Open, so the registry
// streams the blob from its next source without keeping it here. Metainfo
// files are entries too; an evicted one is computed again when needed.

// Keys of the swarm's cache entries.
func downloadKey(d digest.Digest) string { return "swarm/download/" + d.String() }
func leftoverKey(d digest.Digest) string { return "swarm/leftover/" + d.String() }
func metainfoKey(d digest.Digest) string { return "swarm/metainfo/" + d.String() }

// blockBytes is what a small file (a chunk's .pieces, a metainfo) takes on
// disk at least.
const blockBytes = 4096

// downloadBytes is what a download of lay holds on disk: every chunk's data
// file at full length (reserve allocates it) and its marks file (the
// infohash and a byte per piece), each in whole blocks, so the account is
// never below what the data dir's walk finds.
func downloadBytes(lay layout) int64 {
	var n int64
	for k := range lay.numChunks() {
		_, length := lay.span(k)
		first, end := lay.pieces(k)
		n += fileBytes(length) + fileBytes(int64(metainfo.HashSize+end-first))
	}
	return n
}

// fileBytes rounds n up to whole blocks.
func fileBytes(n int64) int64 { return (n + blockBytes - 1) / blockBytes * blockBytes }

// unbounded is the cache of a swarm configured without one.
func unbounded() *diskcache.Cache {
	c, _ := diskcache.New(math.MaxInt64)
	return c
}

// admitDownload accounts a new download of dgst, pinned for the caller;
// eviction drops it. Caller holds s.admitMu, not s.mu (evictions take it).
func (s *Swarm) admitDownload(dgst digest.Digest, lay layout) (*diskcache.Entry, error) {
	var disk *diskcache.Entry
	disk, err := s.cache.Admit(downloadKey(dgst), downloadBytes(lay), func() { s.evicted(dgst, disk) })
	if err != nil {
		if errors.Is(err, diskcache.ErrFull) {
			s.log.Warn("download not kept: the cache is full of blobs being served; the blob is left to other sources",
				"digest", dgst, "size", lay.size, "cache_limit", s.cache.Limit(), "err", err)
		}
		return nil, fmt.Errorf("swarm: %w", err)
	}
	return disk, nil
}

// evicted drops the download the cache evicted, if it is still the one in
// the table.
func (s *Swarm) evicted(dgst digest.Digest, disk *diskcache.Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.torrents[dgst]
	if e == nil || e.disk != disk {
		return
	}
	s.log.Info("download evicted from the cache", "digest", dgst, "size", e.size(), "verified", e.isVerified())
	if err := s.dropLocked(e, errEvicted); err != nil {
		s.log.Warn("evict", "digest", dgst, "err", err)
	}
}

// errEvicted is what a stream of an evicted download sees (none: only
// downloads with no open Blob are evicted).
var errEvicted = errors.New("swarm: download evicted from the cache")

// pinLocked pins e's cache entry for one more Blob handle and returns the
// pin (nil for an entry with none: a seed). False when the cache evicted it
// meanwhile: e is dropped here (its evict then finds it gone) and the
// caller treats the digest as absent. Caller holds s.mu.
func (s *Swarm) pinLocked(e *entry) (*diskcache.Entry, bool) {
	if e.disk == nil {
		return nil, true
	}
	if e.disk.Pin() {
		return e.disk, true
	}
	if err := s.dropLocked(e, errEvicted); err != nil {
		s.log.Warn("evict", "digest", e.digest, "err", err)
	}
	return nil, false
}

// handleLocked is a Blob handle of e: a seed's content, or the download,
// pinned until the handle's Close; nil when e was just evicted. Caller
// holds s.mu.
func (s *Swarm) handleLocked(e *entry) *torrentBlob {
	pin, ok := s.pinLocked(e)
	if !ok {
		return nil
	}
	return &torrentBlob{s: s, size: e.size(), e: e, pin: pin}
}

// accountLeftovers puts what an earlier run left in the data dir into the
// cache, unpinned: downloads (a retry resumes them) and metainfo. They go
// first when room is needed.
func (s *Swarm) accountLeftovers() {
	sizes := map[digest.Digest]int64{}
	walkFiles(s.downloads.dir, func(algo, name string, blocks int64) {
		hex, _, _ := strings.Cut(name, ".")
		if d := digest.NewDigestFromEncoded(digest.Algorithm(algo), hex); d.Validate() == nil {
			sizes[d] += blocks
		}
	})
	for d, n := range sizes {
		s.cache.Add(leftoverKey(d), n, func() { s.evictLeftover(d) })
	}
	walkFiles(s.meta.dir, func(algo, name string, blocks int64) {
		hex, ok := strings.CutSuffix(name, ".info")
		if d := digest.NewDigestFromEncoded(digest.Algorithm(algo), hex); ok && d.Validate() == nil {
			s.meta.account(d, blocks)
		}
	})
}

// evictLeftover deletes an earlier run's download unless a download of it
// runs now (which took its files over). A seed of the digest does not keep
// them: they are left out of the account from now on, so they must go.
func (s *Swarm) evictLeftover(d digest.Digest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.torrents[d]; e != nil && e.seed == nil && !e.growing {
		return
	}
	s.removeLeftoverFilesLocked(d)
}

// dropLeftoverLocked ends the account of an earlier run's download of d
// and deletes its files: d is seeded here now, and nothing resumes them.
// Caller holds s.mu, and no download of d runs.
func (s *Swarm) dropLeftoverLocked(d digest.Digest) {
	old := s.cache.Get(leftoverKey(d))
	if old == nil {
		return
	}
	old.Remove()
	s.removeLeftoverFilesLocked(d)
}

// removeLeftoverFilesLocked deletes the download files of d that no
// download in the table uses (an earlier run's, or one that was not
// admitted). Caller holds s.mu.
func (s *Swarm) removeLeftoverFilesLocked(d digest.Digest) {
	if err := s.downloads.remove(d); err != nil {
		s.log.Warn("remove an earlier run's download", "digest", d, "err", err)
	}
}

// walkFiles calls fn for each regular file <dir>/<algo>/<name> with the
// bytes its blocks take.
func walkFiles(dir string, fn func(algo, name string, blocks int64)) {
	algos, _ := os.ReadDir(dir)
	for _, a := range algos {
		if !a.IsDir() {
			continue
		}
		files, _ := os.ReadDir(filepath.Join(dir, a.Name()))
		for _, f := range files {
			info, err := f.Info()
			if err != nil || !info.Mode().IsRegular() {
				continue
			}
			n := info.Size()
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				n = st.Blocks * 512
			}
			fn(a.Name(), f.Name(), n)
		}
	}
}
