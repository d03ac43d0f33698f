package egress

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/writeprogress"
	"github.com/dregistry/dregistry/registry/oci"
)

// PeerHandler serves PeerPathPrefix to cluster members from this node's
// Fetcher: GET and HEAD of blobs/<digest> (with Range), manifests/<digest>
// and tags/<tag>, and POST of fetch/<digest> (start the download, or join
// it, without streaming it: the answer is the size, and the download runs
// to its end on this node, bounded by its stall timeout, for the swarm to
// spread), each with ?ns=<registry>&repo=<repository>. Only members may
// call it: in a keyed cluster a request must carry a token signed with the
// cluster key, in a keyless one come from a member's address (403
// otherwise, before any lookup). It answers only requests carrying the
// no-forward header, never forwards one, and refuses (503) when this node
// may not reach upstreams, so the requester moves on to the next
// candidate. Mount it at PeerPathPrefix. A response that makes no write
// progress for the Fetcher's stall timeout (a member that stopped reading)
// is cut.
func (s *Source) PeerHandler() http.Handler {
	return writeprogress.Handler(http.HandlerFunc(s.servePeer), s.cfg.Fetcher.cfg.StallTimeout)
}

func (s *Source) servePeer(w http.ResponseWriter, r *http.Request) {
	if !s.gate.AdmitPeer(w, r) {
		return
	}
	start := strings.HasPrefix(r.URL.Path, fetchPath)
	switch {
	case start && r.Method != http.MethodPost:
		w.Header().Set("Allow", "POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	case !start && r.Method != http.MethodGet && r.Method != http.MethodHead:
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.Header.Get(oci.NoForwardHeader) == "" {
		http.Error(w, "peer requests must carry "+oci.NoForwardHeader, http.StatusBadRequest)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, PeerPathPrefix)
	kind, name, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	if q.Get("ns") == "" {
		http.Error(w, "missing ns (the registry)", http.StatusBadRequest)
		return
	}
	ref, err := oci.ParseRef(q.Get("ns"), q.Get("repo"), "")
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if s.cfg.Registries != nil {
		// Checked on the owner too: its operator's list decides what it
		// fetches, whatever the requester's says.
		if err := s.cfg.Registries.Allows(ref.Registry); err != nil {
			s.log.Warn("egress peer request refused: registry not fetched", "registry", ref.Registry, "reason", err.Error())
			http.Error(w, "registry "+ref.Registry+" is not fetched by this node", http.StatusNotFound)
			return
		}
	}
	s.servePeerKind(w, r, ref, kind, name)
}

// servePeerKind answers an admitted peer request for ref by its kind
// (fetch, blobs, manifests or tags) and name.
func (s *Source) servePeerKind(w http.ResponseWriter, r *http.Request, ref oci.Ref, kind, name string) {
	switch kind {
	case "fetch":
		dgst, err := oci.ParseDigest(name)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if !s.mayServe(w) {
			return
		}
		s.servePeerFetch(w, r, ref, dgst)
	case "blobs", "manifests":
		dgst, err := oci.ParseDigest(name)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if !s.mayServe(w) {
			return
		}
		if kind == "blobs" {
			s.servePeerBlob(w, r, ref, dgst)
		} else {
			s.servePeerManifest(w, r, ref, dgst)
		}
	case "tags":
		mref, err := oci.ParseReference(name)
		if err != nil || mref.Tag == "" {
			http.Error(w, fmt.Sprintf("bad tag %q", name), http.StatusBadRequest)
			return
		}
		if !s.mayServe(w) {
			return
		}
		s.servePeerTag(w, r, ref, mref.Tag)
	default:
		http.NotFound(w, r)
	}
}

// servePeerTag answers the descriptor tag resolves to in ref.
func (s *Source) servePeerTag(w http.ResponseWriter, r *http.Request, ref oci.Ref, tag string) {
	desc, err := s.cfg.Fetcher.Resolve(r.Context(), ref, tag)
	if err != nil {
		s.peerError(w, r, err)
		return
	}
	body, err := json.Marshal(desc)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/vnd.oci.descriptor.v1+json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// mayServe refuses, with 503, when this node is not a candidate in its own
// view: it then must not reach an upstream on anyone's behalf.
func (s *Source) mayServe(w http.ResponseWriter) bool {
	if mayFetch(s.cfg.Cluster.Members(), s.cfg.Egress) {
		return true
	}
	http.Error(w, "this node does not fetch from upstream: egress nodes exist", http.StatusServiceUnavailable)
	return false
}

// peerError answers a failed lookup: 404 when the upstream lacks it (an
// answer), 502 otherwise (the requester tries the next candidate).
func (s *Source) peerError(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusBadGateway
	if errors.Is(err, oci.ErrNotFound) {
		status = http.StatusNotFound
	}
	s.log.Debug("egress peer request failed", "path", r.URL.Path, "status", status, "err", err)
	http.Error(w, err.Error(), status)
}

func (s *Source) servePeerManifest(w http.ResponseWriter, r *http.Request, ref oci.Ref, dgst digest.Digest) {
	m, err := s.cfg.Fetcher.Manifest(r.Context(), ref, dgst)
	if err != nil {
		s.peerError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", m.MediaType)
	w.Header().Set("Content-Length", strconv.Itoa(len(m.Content)))
	w.Header().Set("Docker-Content-Digest", dgst.String())
	if r.Method != http.MethodHead {
		_, _ = w.Write(m.Content)
	}
}

func (s *Source) servePeerBlob(w http.ResponseWriter, r *http.Request, ref oci.Ref, dgst digest.Digest) {
	if r.Method == http.MethodHead && r.Header.Get("Range") == "" {
		// The size only (remoteStat): no download starts for it.
		size, err := s.cfg.Fetcher.Stat(r.Context(), ref, dgst)
		if err != nil {
			s.peerError(w, r, err)
			return
		}
		w.Header().Set("Docker-Content-Digest", dgst.String())
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Accept-Ranges", "bytes")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.WriteHeader(http.StatusOK)
		return
	}
	b, err := s.cfg.Fetcher.Fetch(r.Context(), ref, dgst)
	if err != nil {
		s.peerError(w, r, err)
		return
	}
	defer b.Close()
	w.Header().Set("Docker-Content-Digest", dgst.String())
	w.Header().Set("Content-Type", "application/octet-stream")
	if sb, ok := b.(oci.SeekableBlob); ok {
		http.ServeContent(w, r, "", time.Time{}, sb.ReadSeeker())
		return
	}
	size := b.Size()
	start, length, status := blobRange(r.Header.Get("Range"), size)
	w.Header().Set("Accept-Ranges", "bytes")
	switch status {
	case http.StatusRequestedRangeNotSatisfiable:
		w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
		http.Error(w, "range not satisfiable", status)
		return
	case http.StatusPartialContent:
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, size))
	}
	w.Header().Set("Content-Length", strconv.FormatInt(length, 10))
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	rc, err := b.Open(r.Context(), start)
	if err == nil {
		err = copyBlob(w, rc, length)
		rc.Close()
	}
	var left clientLeft
	switch {
	case errors.As(err, &left):
		s.log.Debug("requester left during an egress blob reply", "digest", dgst, "err", err)
	case err != nil:
		s.log.Warn("aborting egress blob reply", "digest", dgst, "err", err)
		// Never complete a reply with bytes we do not have: the requester
		// sees a cut connection, not a short blob.
		panic(http.ErrAbortHandler)
	}
}

// clientLeft wraps a write error: the requester went away.
type clientLeft struct{ error }

func (c clientLeft) Unwrap() error { return c.error }

// copyBlob sends exactly n bytes of src; a short source is an error.
func copyBlob(w io.Writer, src io.Reader, n int64) error {
	buf := make([]byte, min(n, 256<<10))
	for n > 0 {
		got, rerr := src.Read(buf[:min(int64(len(buf)), n)])
		if got > 0 {
			if _, werr := w.Write(buf[:got]); werr != nil {
				return clientLeft{werr}
			}
			n -= int64(got)
		}
		switch {
		case n == 0:
			return nil
		case rerr == io.EOF:
			return fmt.Errorf("blob ended %d bytes short: %w", n, io.ErrUnexpectedEOF)
		case rerr != nil:
			return rerr
		}
	}
	return nil
}

// blobRange reads a single Range "bytes=a-b", "bytes=a-" or "bytes=-n";
// anything else is the whole blob, as registry's handler answers it.
func blobRange(header string, size int64) (start, length int64, status int) {
	spec, ok := strings.CutPrefix(header, "bytes=")
	if !ok || strings.Contains(spec, ",") || size == 0 {
		return 0, size, http.StatusOK
	}
	first, last, ok := strings.Cut(spec, "-")
	if !ok {
		return 0, size, http.StatusOK
	}
	a, aErr := strconv.ParseInt(first, 10, 64)
	b, bErr := strconv.ParseInt(last, 10, 64)
	switch {
	case first == "" && bErr == nil && b > 0: // the last b bytes
		b = min(b, size)
		return size - b, b, http.StatusPartialContent
	case aErr != nil || a < 0 || (last != "" && (bErr != nil || b < a)):
		return 0, size, http.StatusOK
	case a >= size:
		return 0, 0, http.StatusRequestedRangeNotSatisfiable
	case last == "" || b >= size:
		return a, size - a, http.StatusPartialContent
	}
	return a, b - a + 1, http.StatusPartialContent
}
