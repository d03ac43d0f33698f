package swarm

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/diskcache"
)

// metainfoCache keeps each blob's info dictionary in the data directory, so
// a restart seeds without rehashing. A file starts with a header line holding
// the sha256 of the info bytes that follow: a torn or flipped file is
// detected and recomputed, never trusted.
type metainfoCache struct {
	dir string
	// cache accounts each file in the data dir's cache; an evicted file is
	// computed again when needed (a seed rehashes, a download asks a peer).
	cache *diskcache.Cache
}

const metainfoHeader = "dregistry-metainfo-v1 "

func (c metainfoCache) path(dgst digest.Digest) string {
	return filepath.Join(c.dir, string(dgst.Algorithm()), dgst.Encoded()+".info")
}

// load returns the cached info of dgst; fs.ErrNotExist when there is none
// (or none that is intact).
func (c metainfoCache) load(dgst digest.Digest) (*blobInfo, error) {
	raw, err := os.ReadFile(c.path(dgst))
	if err != nil {
		return nil, err
	}
	line, body, ok := bytes.Cut(raw, []byte("\n"))
	sum := sha256.Sum256(body)
	if !ok || string(line) != metainfoHeader+hex.EncodeToString(sum[:]) {
		return nil, fmt.Errorf("metainfo cache of %s is corrupt: %w", dgst, fs.ErrNotExist)
	}
	b, err := parseBlobInfo(dgst, body)
	if err != nil {
		return nil, fmt.Errorf("metainfo cache: %w: %w", err, fs.ErrNotExist)
	}
	return b, nil
}

// store writes the info atomically (temporary file, then rename). The file
// is accounted in the data dir's cache before it is written, so the data
// dir never holds more than the cache's limit: when the entries being read
// or written leave no room, it is not written (it is computed again when
// needed). Admitting may evict, so the caller holds no lock an evict takes
// (Swarm.mu).
func (c metainfoCache) store(b *blobInfo) error {
	p := c.path(b.digest)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("metainfo cache: %w", err)
	}
	sum := sha256.Sum256(b.infoBytes)
	content := append([]byte(metainfoHeader+hex.EncodeToString(sum[:])+"\n"), b.infoBytes...)
	done, err := c.admit(b.digest, fileBytes(int64(len(content))))
	if err != nil {
		return fmt.Errorf("metainfo cache of %s: %w", b.digest, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".info-*")
	if err != nil {
		done(false)
		return fmt.Errorf("metainfo cache: %w", err)
	}
	_, werr := tmp.Write(content)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		done(false)
		return fmt.Errorf("metainfo cache of %s: %w", b.digest, err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		os.Remove(tmp.Name())
		done(false)
		return fmt.Errorf("metainfo cache of %s: %w", b.digest, err)
	}
	done(true)
	return nil
}

// admit accounts n bytes for the file of dgst, in place of its earlier
// account (the file is rewritten), pinned until done: done(true) once the
// file is written, done(false) when it was not.
func (c metainfoCache) admit(dgst digest.Digest, n int64) (done func(written bool), err error) {
	if c.cache == nil {
		return func(bool) {}, nil
	}
	key := metainfoKey(dgst)
	if old := c.cache.Get(key); old != nil {
		old.Remove()
	}
	p := c.path(dgst)
	e, err := c.cache.Admit(key, n, func() { os.Remove(p) })
	if err != nil {
		return nil, err
	}
	return func(written bool) {
		if written {
			e.Unpin()
		} else {
			e.Remove()
		}
	}, nil
}

// account puts the file of dgst into the data dir's cache. It evicts
// nothing (the next admission does), so it may be called holding Swarm.mu.
func (c metainfoCache) account(dgst digest.Digest, n int64) {
	if c.cache != nil {
		p := c.path(dgst)
		c.cache.Add(metainfoKey(dgst), n, func() { os.Remove(p) })
	}
}

func (c metainfoCache) remove(dgst digest.Digest) {
	os.Remove(c.path(dgst))
	if c.cache != nil {
		if e := c.cache.Get(metainfoKey(dgst)); e != nil {
			e.Remove()
		}
	}
}
