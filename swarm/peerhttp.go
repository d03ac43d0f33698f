package swarm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/writeprogress"
	"github.com/dregistry/dregistry/registry/oci"
)

// The peer endpoint: seeders answer these for their local content only, to
// cluster members only, and never forward a request anywhere.
const (
	metainfoPathPrefix = "/peer/v1/metainfo/"
	blobPathPrefix     = "/peer/v1/blobs/"
	// maxMetainfoBytes bounds a peer's metainfo reply: 8 MiB pieces of a
	// 1 TiB blob need 2.5 MiB of piece hashes.
	maxMetainfoBytes = 4 << 20
)

// PeerHandler serves GET and HEAD of /peer/v1/metainfo/<digest> (the info
// dictionary of a seeded blob) and /peer/v1/blobs/<digest> (its bytes, with
// Range) to cluster members. The daemon mounts it on its HTTP address. A
// response that makes no write progress for StallTimeout (a peer that
// stopped reading) is cut.
func (s *Swarm) PeerHandler() http.Handler {
	return writeprogress.Handler(http.HandlerFunc(s.servePeer), s.cfg.StallTimeout)
}

func (s *Swarm) servePeer(w http.ResponseWriter, r *http.Request) {
	if !s.gate.AdmitPeer(w, r) {
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	var name string
	var wantBlob bool
	switch {
	case strings.HasPrefix(r.URL.Path, metainfoPathPrefix):
		name = strings.TrimPrefix(r.URL.Path, metainfoPathPrefix)
	case strings.HasPrefix(r.URL.Path, blobPathPrefix):
		name, wantBlob = strings.TrimPrefix(r.URL.Path, blobPathPrefix), true
	default:
		http.NotFound(w, r)
		return
	}
	dgst, err := digest.Parse(name)
	if err != nil {
		http.Error(w, fmt.Sprintf("bad digest %q: %v", name, err), http.StatusBadRequest)
		return
	}
	if q := r.URL.Query(); !wantBlob && q.Has("chunk") {
		s.serveChunkInfo(w, r, dgst, q.Get("chunk"), q.Get("wait") != "0", q.Get("held") == "1")
		return
	}
	e := s.seeded(dgst)
	if e == nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Docker-Content-Digest", dgst.String())
	if !wantBlob {
		w.Header().Set("Content-Type", "application/x-bittorrent-info")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(e.info.infoBytes))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", time.Time{}, io.NewSectionReader(e.seed, 0, e.size()))
}

// serveChunkInfo answers /peer/v1/metainfo/<digest>?chunk=<k>: chunk k's
// info dictionary, of a blob seeded here or growing here (the egress spool).
// A chunk not published yet is waited for, at most Config.MetainfoPoll (not
// at all with wait=0), then answered 204 No Content: ask again. A blob this
// node does not seed or grow (or no longer: its fetch failed) is 404. The
// answers about a growing blob say how many of its bytes are written here
// (FetchedHeader). With
// held=1, a blob this node downloads (it followed the owner) answers too,
// never waiting, for a chunk all of whose pieces it holds (404 for the
// others): the candidate that takes over a dead owner's download asks so
// (Prefix). Without it a download is 404, so nobody follows a follower.
func (s *Swarm) serveChunkInfo(w http.ResponseWriter, r *http.Request, dgst digest.Digest, chunk string, wait, held bool) {
	k, err := strconv.Atoi(chunk)
	if err != nil || k < 0 || strconv.Itoa(k) != chunk {
		http.Error(w, fmt.Sprintf("bad chunk %q", chunk), http.StatusBadRequest)
		return
	}
	w.Header().Set(TorrentPortHeader, strconv.Itoa(int(s.TorrentAddr().Port())))
	timer := time.NewTimer(s.cfg.MetainfoPoll)
	defer timer.Stop()
	for {
		s.mu.Lock()
		e := s.torrents[dgst]
		if e == nil {
			s.mu.Unlock()
			http.NotFound(w, r)
			return
		}
		if k >= len(e.chunks) {
			s.mu.Unlock()
			http.Error(w, fmt.Sprintf("chunk %d of %s: it has %d", k, dgst, len(e.chunks)), http.StatusBadRequest)
			return
		}
		c, changed, download := e.chunks[k], e.changed, e.seed == nil && !e.growing
		if e.grown != nil {
			w.Header().Set(FetchedHeader, strconv.FormatInt(e.grown.Load(), 10))
		}
		s.mu.Unlock()
		if download && (!held || c == nil || c.t.BytesMissing() > 0) {
			// Asked without s.mu: BytesMissing takes the client lock.
			http.NotFound(w, r)
			return
		}
		if c != nil {
			w.Header().Set("Docker-Content-Digest", dgst.String())
			w.Header().Set("Content-Type", "application/x-bittorrent-info")
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(c.info.infoBytes))
			return
		}
		if !wait {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			w.WriteHeader(http.StatusNoContent)
			return
		case <-r.Context().Done():
			return
		}
	}
}

// peerGet fetches path from one peer's HTTP endpoint, reading at most limit
// bytes of a 200 reply.
func (s *Swarm) peerGet(ctx context.Context, p Peer, path string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.HTTPAddr+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set(oci.NoForwardHeader, "1")
	resp, err := s.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("peer %s: GET %s: %s", p.HTTPAddr, path, resp.Status)
	}
	if resp.ContentLength > limit {
		return nil, fmt.Errorf("peer %s: GET %s: %d bytes, more than %d", p.HTTPAddr, path, resp.ContentLength, limit)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("peer %s: GET %s: %w", p.HTTPAddr, path, err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("peer %s: GET %s: more than %d bytes", p.HTTPAddr, path, limit)
	}
	return body, nil
}

// fetchMetainfo asks the seeders in random order for the blob's info and
// returns the first that is well formed. Its piece hashes are checked later
// by the download itself, and the whole blob by its digest.
func (s *Swarm) fetchMetainfo(ctx context.Context, dgst digest.Digest, peers []Peer) (*blobInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.LookupTimeout)
	defer cancel()
	var errs []error
	for _, i := range rand.Perm(len(peers)) {
		body, err := s.peerGet(ctx, peers[i], metainfoPathPrefix+dgst.String(), maxMetainfoBytes)
		if err == nil {
			var b *blobInfo
			if b, err = parseBlobInfo(dgst, body); err == nil {
				return b, nil
			}
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("metainfo of %s from %d seeders: %w", dgst, len(peers), errors.Join(errs...))
}

// fetchSmall gets a small blob whole from one seeder (trying the next on
// failure) and verifies its digest before anything of it is served.
func (s *Swarm) fetchSmall(ctx context.Context, b *blobInfo, peers []Peer) ([]byte, error) {
	var errs []error
	for _, i := range rand.Perm(len(peers)) {
		// A seeder that stops sending mid-body is given up after StallTimeout.
		attempt, cancel := context.WithTimeout(ctx, s.cfg.StallTimeout)
		body, err := s.peerGet(attempt, peers[i], blobPathPrefix+b.digest.String(), b.size())
		cancel()
		if err == nil {
			switch {
			case int64(len(body)) != b.size():
				err = fmt.Errorf("peer %s sent %d of %d bytes", peers[i].HTTPAddr, len(body), b.size())
			case b.digest.Algorithm().FromBytes(body) != b.digest:
				err = fmt.Errorf("peer %s: %w", peers[i].HTTPAddr, errDigestMismatch)
			default:
				return body, nil
			}
			s.log.Warn("peer sent wrong bytes, trying another seeder", "digest", b.digest, "peer", peers[i].HTTPAddr, "err", err)
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("blob %s over HTTP from %d seeders: %w", b.digest, len(peers), errors.Join(errs...))
}
