package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/registry/oci"
)

// TorrentPortHeader carries the torrent port of the member answering a
// chunk's metainfo, so a follower can dial the owner before gossip lists it.
const TorrentPortHeader = "X-Dregistry-Torrent-Port"

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
	first, ownerTorrent, err := s.pollChunk(ask, ownerHTTP, dgst, lay, 0, pollNow)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("swarm: follow %s from %s: %w: %w", dgst, ownerHTTP, err, oci.ErrNotFound)
	}
	e := newEntry(dgst, lay)
	e.owner, e.ownerTorrent = ownerHTTP, ownerTorrent
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
// passes without an answer.
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
		c, _, err := s.pollChunk(ctx, e.owner, e.digest, e.lay, k, pollWait)
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
		if c == nil {
			continue // not published yet: ask again
		}
		if !s.addFollowedChunk(ctx, e, c) {
			return
		}
		k++
	}
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

// pollChunk asks the member at ownerHTTP for chunk k's metainfo; with
// pollWait it holds the request until the chunk is published or its bound
// passes. A nil chunk and no error means not published yet. It also
// returns the member's torrent address when it says.
func (s *Swarm) pollChunk(ctx context.Context, ownerHTTP string, dgst digest.Digest, lay layout, k int, mode pollMode) (*chunkInfo, netip.AddrPort, error) {
	path := metainfoPathPrefix + dgst.String() + "?chunk=" + strconv.Itoa(k)
	switch mode {
	case pollNow:
		path += "&wait=0"
	case pollHeld:
		path += "&wait=0&held=1"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ownerHTTP+path, nil)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	req.Header.Set(oci.NoForwardHeader, "1")
	resp, err := s.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	defer resp.Body.Close()
	addr := torrentAddrOf(ownerHTTP, resp.Header.Get(TorrentPortHeader))
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNoContent:
		return nil, addr, nil
	case http.StatusNotFound:
		return nil, addr, fmt.Errorf("chunk %d of %s: %w", k, dgst, errOwnerForgot)
	default:
		return nil, addr, fmt.Errorf("peer %s: GET %s: %s", ownerHTTP, path, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetainfoBytes+1))
	if err != nil {
		return nil, addr, fmt.Errorf("peer %s: GET %s: %w", ownerHTTP, path, err)
	}
	if len(body) > maxMetainfoBytes {
		return nil, addr, fmt.Errorf("peer %s: GET %s: more than %d bytes", ownerHTTP, path, maxMetainfoBytes)
	}
	c, err := parseChunkInfo(dgst, lay, k, body)
	if err != nil {
		return nil, addr, fmt.Errorf("peer %s: %w", ownerHTTP, err)
	}
	return c, addr, nil
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
