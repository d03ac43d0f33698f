package egress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dregistry/dregistry/registry/oci"
)

// Fetcher is the owner side: one upstream download per digest however many
// callers ask, streamed to all of them from a spool file as it arrives.
type Fetcher struct {
	cfg    FetcherConfig
	log    *slog.Logger
	ctx    context.Context // ends every download at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	spools    map[digest.Digest]*spool // downloading, or verified and kept
	badPrefix badPrefixes              // resumed downloads that did not match
	closed    bool

	meta *metadata // tags and manifests

	unkept prometheus.Counter // streams served without a spool (unkept.go)
}

// spoolName matches the files a Fetcher writes, and nothing else.
var spoolName = regexp.MustCompile(`^(sha256|sha512)-[0-9a-f]+(\.partial)?$`)

// NewFetcher prepares SpoolDir, removing spools an earlier run left: they
// are unverified, or verified copies nobody seeds any more.
func NewFetcher(cfg FetcherConfig) (*Fetcher, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.SpoolDir, 0o700); err != nil {
		return nil, fmt.Errorf("egress: spool dir: %w", err)
	}
	entries, err := os.ReadDir(cfg.SpoolDir)
	if err != nil {
		return nil, fmt.Errorf("egress: spool dir: %w", err)
	}
	for _, e := range entries {
		if spoolName.MatchString(e.Name()) {
			if err := os.Remove(filepath.Join(cfg.SpoolDir, e.Name())); err != nil {
				return nil, fmt.Errorf("egress: clear old spool: %w", err)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Fetcher{
		cfg: cfg, log: cfg.Logger, ctx: ctx, cancel: cancel,
		spools:    map[digest.Digest]*spool{},
		badPrefix: badPrefixes{},
		meta:      newMetadata(cfg),
		unkept:    unkeptMetric(),
	}, nil
}

var errClosed = errors.New("egress: fetcher closed")

// Fetch returns the blob, downloading it from ref's upstream unless a
// download of the digest is running or kept, which the caller joins. It
// returns once the size is known; reads then follow the download.
func (f *Fetcher) Fetch(ctx context.Context, ref oci.Ref, dgst digest.Digest) (oci.Blob, error) {
	if _, err := oci.ParseDigest(dgst.String()); err != nil {
		return nil, err
	}
	// A download started for another repository that lacks the blob does
	// not speak for ref, and a copy released meanwhile is gone: ask once
	// more.
	for attempt := 0; ; attempt++ {
		if b := f.local(ctx, ref, dgst); b != nil {
			return b, nil
		}
		s, err := f.attach(ref, dgst)
		if err != nil {
			return nil, err
		}
		select {
		case <-s.ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("egress: waiting for %s: %w", dgst, context.Cause(ctx))
		}
		if noRoom, size := s.streams(); noRoom {
			return &unkeptBlob{f: f, ref: ref, dgst: dgst, size: size}, nil
		}
		// The download's own stall watch ends a stalled spool first; the
		// readers' bound is a backstop, so they see its error.
		b, err := s.open(2 * f.cfg.StallTimeout)
		retry := errors.Is(err, errReleased) || (s.ref != ref && errors.Is(err, oci.ErrNotFound))
		if retry && attempt == 0 {
			continue
		}
		return b, err
	}
}

// Stat returns the size of dgst without fetching its body or making a
// spool: a download's size once the upstream gave it, this node's own
// copy's, or the upstream's answer to a HEAD (bounded by LookupTimeout).
// A HEAD of a blob must not reserve disk or start a download.
func (f *Fetcher) Stat(ctx context.Context, ref oci.Ref, dgst digest.Digest) (int64, error) {
	if _, err := oci.ParseDigest(dgst.String()); err != nil {
		return 0, err
	}
	f.mu.Lock()
	s := f.spools[dgst]
	f.mu.Unlock()
	if s != nil {
		select {
		case <-s.ready:
		case <-ctx.Done():
			return 0, fmt.Errorf("egress: size of %s: %w", dgst, context.Cause(ctx))
		}
		s.mu.Lock()
		size, err := s.size, s.err
		s.mu.Unlock()
		if err == nil && size >= 0 {
			return size, nil
		}
	}
	if f.cfg.Local != nil {
		if b, err := f.cfg.Local.Blob(ctx, ref, dgst); err == nil {
			size := b.Size()
			_ = b.Close()
			if size >= 0 {
				return size, nil
			}
		}
	}
	lookup, cancel := context.WithTimeout(ctx, f.cfg.LookupTimeout)
	defer cancel()
	b, err := f.cfg.Upstream.Blob(lookup, ref, dgst)
	if err != nil {
		return 0, fmt.Errorf("egress: size of %s: %w", dgst, err)
	}
	defer b.Close()
	return b.Size(), nil
}

// local returns this node's own copy of dgst when no spool of it exists
// (none running, none kept) and Local holds it; nil otherwise. A running
// or kept spool is preferred: it is what the download's callers share.
func (f *Fetcher) local(ctx context.Context, ref oci.Ref, dgst digest.Digest) oci.Blob {
	if f.cfg.Local == nil {
		return nil
	}
	f.mu.Lock()
	_, spooled := f.spools[dgst]
	f.mu.Unlock()
	if spooled {
		return nil
	}
	b, err := f.cfg.Local.Blob(ctx, ref, dgst)
	if err != nil {
		return nil // not held here (or unreadable): the upstream decides
	}
	if b.Size() < 0 {
		_ = b.Close()
		return nil
	}
	f.log.Debug("egress blob served from this node's content", "digest", dgst)
	return b
}

// attach returns the spool of dgst, starting its download when there is
// none.
func (f *Fetcher) attach(ref oci.Ref, dgst digest.Digest) (*spool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, errClosed
	}
	if s := f.spools[dgst]; s != nil {
		return s, nil
	}
	path := f.spoolPath(dgst) + ".partial"
	file, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("egress: spool %s: %w", dgst, err)
	}
	s := newSpool(ref, dgst, path)
	f.spools[dgst] = s
	f.wg.Add(1)
	go f.download(s, file)
	return s, nil
}

func (f *Fetcher) spoolPath(dgst digest.Digest) string {
	return filepath.Join(f.cfg.SpoolDir, strings.Replace(dgst.String(), ":", "-", 1))
}

// forget drops s from the table (a failed download: the next caller
// starts afresh).
func (f *Fetcher) forget(s *spool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.spools[s.dgst] == s {
		delete(f.spools, s.dgst)
	}
}

// Release deletes the kept copy of dgst once containerd holds the blob. A
// download still running is left alone; descriptors already open (a seed,
// readers) keep their bytes.
func (f *Fetcher) Release(dgst digest.Digest) error {
	f.mu.Lock()
	s := f.spools[dgst]
	if s == nil {
		f.mu.Unlock()
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.verified {
		f.mu.Unlock()
		return nil
	}
	delete(f.spools, dgst)
	f.mu.Unlock()
	s.released = true
	if s.disk != nil {
		s.disk.Remove()
	}
	if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("egress: release %s: %w", dgst, err)
	}
	return nil
}

// Close ends every download (their readers fail) and removes every spool.
func (f *Fetcher) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.cancel()
	f.wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for d, s := range f.spools {
		delete(f.spools, d)
		if e := s.cacheEntry(); e != nil {
			e.Remove()
		}
		if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
