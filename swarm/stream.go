package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/opencontainers/go-digest"
)

// errStalled fails a read that waited too long for any piece.
var errStalled = errors.New("swarm: no progress")

// streamReader streams a downloading blob in order from a torrent reader: it
// returns only pieces that passed their hash check (never SetResponsive), and
// it withholds the blob's final bytes until the whole digest matches, so a
// bad blob ends in an error, never in a complete response.
type streamReader struct {
	s         *Swarm
	e         *entry
	r         torrent.Reader
	ctx       context.Context
	cancel    context.CancelCauseFunc
	watchdog  *time.Timer
	pos, size int64
	// digester hashes the stream itself when it starts at 0; a stream that
	// starts later is checked against the stored pieces at the end.
	digester digest.Digester
	start    int64
	// fromSeed, once set, is where the rest of the blob comes from: the
	// download was replaced by a local seed of the same digest (the egress
	// spool or containerd's copy), which closed its torrent under us.
	fromSeed  io.Reader
	err       error
	closeOnce sync.Once
}

func newStreamReader(ctx context.Context, s *Swarm, e *entry, offset int64) *streamReader {
	ctx, cancel := context.WithCancelCause(ctx)
	sr := &streamReader{s: s, e: e, r: e.t.NewReader(), ctx: ctx, cancel: cancel, pos: offset, start: offset, size: e.info.size()}
	sr.r.SetContext(ctx)
	sr.r.SetReadahead(s.cfg.Readahead)
	if offset > 0 {
		if _, err := sr.r.Seek(offset, io.SeekStart); err != nil {
			sr.err = fmt.Errorf("swarm: seek %s to %d: %w", e.info.digest, offset, err)
		}
	}
	if offset == 0 && !e.isVerified() {
		sr.digester = e.info.digest.Algorithm().Digester()
	}
	// The watchdog runs only while a Read waits, so a slow consumer is not
	// mistaken for a stalled swarm.
	sr.watchdog = time.AfterFunc(s.cfg.StallTimeout, func() {
		cancel(fmt.Errorf("%w for %s on %s", errStalled, s.cfg.StallTimeout, e.info.digest))
	})
	sr.watchdog.Stop()
	return sr
}

func (sr *streamReader) Read(p []byte) (int, error) {
	if sr.err != nil {
		return 0, sr.err
	}
	if sr.pos == sr.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), sr.size-sr.pos)]
	var n int
	var err error
	if sr.fromSeed != nil {
		n, err = sr.fromSeed.Read(p)
	} else {
		sr.watchdog.Reset(sr.s.cfg.StallTimeout)
		n, err = sr.r.Read(p)
		sr.watchdog.Stop()
	}
	if n > 0 {
		if sr.digester != nil {
			sr.digester.Hash().Write(p[:n])
		}
		sr.pos += int64(n)
	}
	if sr.pos == sr.size {
		if verr := sr.verify(); verr != nil {
			sr.err = verr
			return 0, verr
		}
		return n, nil
	}
	if err != nil && sr.fromSeed == nil && sr.switchToSeed() {
		if n > 0 {
			return n, nil
		}
		return sr.Read(p)
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		if cause := context.Cause(sr.ctx); cause != nil {
			err = cause
		}
		sr.err = fmt.Errorf("swarm: blob %s at byte %d: %w", sr.e.info.digest, sr.pos, err)
		return n, sr.err
	}
	return n, nil
}

// switchToSeed moves a failed stream onto a local seed of its digest, if
// one replaced the download and the switch keeps every byte checked: either
// nothing was served from the download yet, or the stream hashes the whole
// blob itself (it started at 0) and still checks it at the end. A stream
// whose client went away does not switch.
func (sr *streamReader) switchToSeed() bool {
	if cause := context.Cause(sr.ctx); cause != nil && !errors.Is(cause, errStalled) {
		return false
	}
	if sr.pos != sr.start && sr.digester == nil {
		return false
	}
	seed := sr.s.seeded(sr.e.info.digest)
	if seed == nil || seed == sr.e || seed.info.size() != sr.size {
		return false
	}
	sr.fromSeed = io.NewSectionReader(seed.seed, sr.pos, sr.size-sr.pos)
	sr.s.log.Debug("stream continues from the local seed that replaced its download", "digest", sr.e.info.digest, "at", sr.pos)
	return true
}

// verify checks the whole blob's digest before its last bytes are released.
func (sr *streamReader) verify() error {
	if sr.fromSeed != nil {
		// A seed is verified content; what came from the download before
		// the switch is covered by the stream's own digester, if any.
		if sr.digester != nil && sr.digester.Digest() != sr.e.info.digest {
			return fmt.Errorf("swarm: blob %s: %w (got %s)", sr.e.info.digest, errDigestMismatch, sr.digester.Digest())
		}
		return nil
	}
	if sr.e.isVerified() {
		return nil
	}
	want := sr.e.info.digest
	var got digest.Digest
	if sr.digester != nil {
		got = sr.digester.Digest()
	} else {
		var err error
		if got, err = sr.hashStored(); err != nil {
			return fmt.Errorf("swarm: verify %s: %w", want, err)
		}
	}
	if got != want {
		err := fmt.Errorf("swarm: blob %s: %w (got %s); download discarded", want, errDigestMismatch, got)
		sr.s.discard(sr.e, err)
		return err
	}
	sr.s.verified(sr.e)
	return nil
}

// hashStored hashes the blob from the start through a second reader; all its
// pieces are in local storage by now, so this reads the disk, not the swarm.
func (sr *streamReader) hashStored() (digest.Digest, error) {
	r := sr.e.t.NewReader()
	defer r.Close()
	r.SetContext(sr.ctx)
	d := sr.e.info.digest.Algorithm().Digester()
	n, err := io.Copy(d.Hash(), io.LimitReader(r, sr.size))
	if err == nil && n != sr.size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return "", err
	}
	return d.Digest(), nil
}

func (sr *streamReader) Close() error {
	sr.watchdog.Stop()
	sr.cancel(context.Canceled)
	var err error
	sr.closeOnce.Do(func() { err = sr.r.Close() })
	return err
}
