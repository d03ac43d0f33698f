package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/registry/oci"
)

// TorrentPortHeader carries the torrent port of the member answering a
// chunk's metainfo, so a follower can dial the owner before gossip lists it.
const TorrentPortHeader = "X-Dregistry-Torrent-Port"

// FetchedHeader carries, in the answers about a growing blob's chunk
// metainfo, how many of its bytes the owner has written so far.
const FetchedHeader = "X-Dregistry-Fetched"

// errOwnerForgot is an owner that does not (or no longer) know a blob.
var errOwnerForgot = errors.New("the owner does not have the blob")

// Follow streams dgst (size bytes) from the swarm while its owner (the
// member whose peer endpoint is ownerHTTP) still fetches it: each chunk's
// metainfo comes from the owner as soon as the chunk is published, and its
// pieces from every peer (the owner, the members the tracker lists for the
// digest, partial ones included, and those PEX finds). It fails at once,
// wrapping oci.ErrNotFound, if the owner does not know the blob, and
// at once too if the data dir cannot hold it (downloadStorage.reserve); a
// stream that makes no progress for StallTimeout fails, and one whose owner
// drops the blob fails with that. The tail is held back until the whole
// digest matches, as for every stream.
func (s *Swarm) Follow(ctx context.Context, dgst digest.Digest, size int64, ownerHTTP string) (oci.Blob, error) {
	if err := dgst.Validate(); err != nil {
		return nil, fmt.Errorf("swarm: follow %q: %w", dgst, err)
	}
	if size <= 0 || ownerHTTP == "" {
		return nil, fmt.Errorf("swarm: follow %s: need a positive size and an owner, got %d and %q", dgst, size, ownerHTTP)
	}
	if b, done, err := s.followKnown(dgst, size); done {
		return b, err
	}
	lay := s.layout(size)
	// One quick question first: an owner that does not know the blob is
	// an immediate not-found, not a stall.
	ask, cancel := context.WithTimeout(ctx, s.cfg.LookupTimeout)
	a, err := s.pollChunk(ask, ownerHTTP, dgst, lay, 0, pollNow)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("swarm: follow %s from %s: %w: %w", dgst, ownerHTTP, err, oci.ErrNotFound)
	}
	first := a.chunk
	e := newEntry(dgst, lay)
	e.owner, e.ownerTorrent = ownerHTTP, a.torrent
	peers := s.downloadPeers(e)
	s.admitMu.Lock()
	defer s.admitMu.Unlock()
	// Someone else started it meanwhile: one entry per digest.
	if b, done, err := s.followKnown(dgst, size); done {
		return b, err
	}
	leftover := s.takeLeftover(dgst)
	disk, err := s.admitDownload(dgst, lay)
	if err != nil {
		leftover()
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		disk.Remove()
		leftover()
		return nil, errClosed
	}
	if other := s.torrents[dgst]; other != nil && other.seed != nil {
		// Seeded meanwhile (only starts hold admitMu): an earlier run's
		// files of it are of no use, and out of the account.
		disk.Remove()
		s.removeLeftoverFilesLocked(dgst)
		return newLocalBlob(other.seed, other.size()), nil
	} else if other != nil {
		disk.Remove()
		leftover()
		return nil, fmt.Errorf("swarm: follow %s: this node is its owner: %w", dgst, oci.ErrNotFound)
	}
	if err := s.reserveLocked(dgst, lay); err != nil {
		disk.Remove()
		s.removeLeftoverFilesLocked(dgst)
		return nil, err
	}
	e.disk = disk
	s.torrents[dgst] = e
	s.holdingsChanged()
	s.armIdleLocked(e, 0)
	next := 0
	if first != nil {
		if _, err := s.addDownloadChunkLocked(e, first, peers); err != nil {
			s.dropLocked(e, err)
			return nil, err
		}
		next = 1
	}
	s.wg.Add(3)
	go s.followChunks(e, next)
	go s.refreshPeers(e)
	go s.keepWindow(e)
	s.log.Debug("following", "digest", dgst, "size", size, "owner", ownerHTTP, "chunks", len(e.chunks))
	return &torrentBlob{s: s, size: size, e: e, pin: disk}, nil
}

// followKnown answers Follow from what this node has of dgst already (done),
// a download pinned for the caller; not done when it has nothing (or the
// cache evicted it just now).
func (s *Swarm) followKnown(dgst digest.Digest, size int64) (oci.Blob, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.torrents[dgst]
	switch {
	case s.closed:
		return nil, true, errClosed
	case e == nil:
		return nil, false, nil
	case e.size() != size:
		return nil, true, fmt.Errorf("swarm: follow %s of %d bytes: known here with %d", dgst, size, e.size())
	case e.seed != nil:
		return newLocalBlob(e.seed, e.size()), true, nil
	case e.growing:
		return nil, true, fmt.Errorf("swarm: follow %s: this node is its owner: %w", dgst, oci.ErrNotFound)
	}
	if b := s.handleLocked(e); b != nil {
		return b, true, nil
	}
	return nil, false, nil
}

// followChunks long-polls the owner for each chunk's metainfo in turn and
// adds the chunk's torrent as soon as it is published. An owner that forgot
// the blob (its fetch failed) fails the download, and so every stream of
// it; an owner that cannot be reached is asked again until StallTimeout
// passes without an answer. Every answer says how far the owner's fetch
// got (noteOwnerFetch).
func (s *Swarm) followChunks(e *entry, k int) {
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-e.stop:
		case <-s.stop:
		case <-ctx.Done():
		}
		cancel()
	}()
	lastAnswer := time.Now()
	backoff := 100 * time.Millisecond
	for k < len(e.chunks) {
		a, err := s.pollChunk(ctx, e.owner, e.digest, e.lay, k, pollWait)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, errOwnerForgot):
			s.failFollow(e, fmt.Errorf("owner %s: %w", e.owner, err))
			return
		case err != nil:
			if time.Since(lastAnswer) > s.cfg.StallTimeout {
				s.failFollow(e, fmt.Errorf("%w: owner %s unreachable: %w", oci.ErrStalled, e.owner, err))
				return
			}
			s.log.Debug("chunk metainfo not fetched, asking again", "digest", e.digest, "chunk", k, "err", err)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		lastAnswer, backoff = time.Now(), 100*time.Millisecond
		s.noteOwnerFetch(e, k, a.fetched)
		if a.chunk == nil {
			continue // not published yet: ask again
		}
		if !s.addFollowedChunk(ctx, e, a.chunk) {
			return
		}
		k++
	}
}

// noteOwnerFetch records that the owner, asked for chunk k, had written
// fetched bytes of the blob (-1: it did not say). Growth since its last
// answer counts in e.ownerWaited when this node holds every byte of the
// chunks before k: the streams then wait on the owner's upstream, not on
// the swarm, and a chunk that takes longer to come from the upstream than
// the egress pipeline's stall bound is no reason to leave the swarm
// (BenchmarkRollout, N = 16 at 12 Mbit/s: a 16 MiB chunk took 11 s, and
// followers that fell back made the owner a star). A fetch that stops
// moving stops counting, so the bounds still end the wait.
func (s *Swarm) noteOwnerFetch(e *entry, k int, fetched int64) {
	prev := e.ownerHas.Load()
	if fetched <= prev {
		return
	}
	e.ownerHas.Store(fetched)
	if prev >= 0 && s.holdsChunksBefore(e, k) {
		e.ownerWaited.Add(fetched - prev)
	}
}

// holdsChunksBefore says whether every byte of chunks 0..k-1 of e is here.
// It takes Swarm.mu, then the client lock per chunk, one after the other.
func (s *Swarm) holdsChunksBefore(e *entry, k int) bool {
	s.mu.Lock()
	chunks := slices.Clone(e.chunks[:k])
	s.mu.Unlock()
	for _, c := range chunks {
		if c == nil || c.t.BytesMissing() > 0 {
			return false
		}
	}
	return true
}

// addFollowedChunk adds chunk c of a followed blob once it is inside the
// window of the furthest stream (see reachChunk); false when the blob or
// the swarm ended.
func (s *Swarm) addFollowedChunk(ctx context.Context, e *entry, c *chunkInfo) bool {
	peers := s.downloadPeers(e)
	for {
		s.mu.Lock()
		if e.gone != nil {
			s.mu.Unlock()
			return false
		}
		if c.index < e.windowEnd {
			defer s.mu.Unlock()
			if e.chunks[c.index] != nil {
				return true
			}
			if _, err := s.addDownloadChunkLocked(e, c, peers); err != nil {
				s.dropLocked(e, err)
				return false
			}
			return true
		}
		changed := e.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}

// failFollow drops a followed download: its streams fail with cause.
func (s *Swarm) failFollow(e *entry, cause error) {
	s.log.Warn("followed blob failed", "digest", e.digest, "err", cause)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.dropLocked(e, cause); err != nil {
		s.log.Warn("drop followed blob", "digest", e.digest, "err", err)
	}
}

// pollMode is how a chunk's metainfo is asked for.
type pollMode int

const (
	pollWait pollMode = iota // from the owner, held until published
	pollNow                  // from the owner, answered at once
	// pollHeld: from any member, answered at once, by a member that
	// downloads the blob too when it holds all of the chunk's pieces.
	pollHeld
)

// pollAnswer is a member's answer about a chunk's metainfo.
type pollAnswer struct {
	chunk   *chunkInfo     // nil: not published yet
	torrent netip.AddrPort // the member's torrent address, when it says
	fetched int64          // the bytes of a growing blob it has; -1 if it does not say
}

// pollChunk asks the member at ownerHTTP for chunk k's metainfo; with
// pollWait it holds the request until the chunk is published or its bound
// passes.
func (s *Swarm) pollChunk(ctx context.Context, ownerHTTP string, dgst digest.Digest, lay layout, k int, mode pollMode) (pollAnswer, error) {
	path := metainfoPathPrefix + dgst.String() + "?chunk=" + strconv.Itoa(k)
	switch mode {
	case pollNow:
		path += "&wait=0"
	case pollHeld:
		path += "&wait=0&held=1"
	}
	a := pollAnswer{fetched: -1}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ownerHTTP+path, nil)
	if err != nil {
		return a, err
	}
	req.Header.Set(oci.NoForwardHeader, "1")
	resp, err := s.cfg.HTTPClient.Do(req)
	if err != nil {
		return a, err
	}
	defer resp.Body.Close()
	a.torrent = torrentAddrOf(ownerHTTP, resp.Header.Get(TorrentPortHeader))
	if v := resp.Header.Get(FetchedHeader); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > lay.size {
			return a, fmt.Errorf("peer %s: GET %s: %s %q is no byte count of a blob of %d bytes", ownerHTTP, path, FetchedHeader, v, lay.size)
		}
		a.fetched = n
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNoContent:
		return a, nil
	case http.StatusNotFound:
		return a, fmt.Errorf("chunk %d of %s: %w", k, dgst, errOwnerForgot)
	default:
		return a, fmt.Errorf("peer %s: GET %s: %s", ownerHTTP, path, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetainfoBytes+1))
	if err != nil {
		return a, fmt.Errorf("peer %s: GET %s: %w", ownerHTTP, path, err)
	}
	if len(body) > maxMetainfoBytes {
		return a, fmt.Errorf("peer %s: GET %s: more than %d bytes", ownerHTTP, path, maxMetainfoBytes)
	}
	c, err := parseChunkInfo(dgst, lay, k, body)
	if err != nil {
		return a, fmt.Errorf("peer %s: %w", ownerHTTP, err)
	}
	a.chunk = c
	return a, nil
}

// torrentAddrOf joins the host of a peer endpoint with a torrent port; the
// zero address when either is not usable.
func torrentAddrOf(httpAddr, port string) netip.AddrPort {
	host, _, err := net.SplitHostPort(httpAddr)
	if err != nil {
		return netip.AddrPort{}
	}
	ip, err := netip.ParseAddr(host)
	p, perr := strconv.ParseUint(port, 10, 16)
	if err != nil || perr != nil || p == 0 {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(p))
}
