package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/registry/oci"
)

// openBlob is a blob a source answered with, opened at the requested range
// when it has to be streamed.
type openBlob struct {
	blob oci.Blob
	rng  byteRange
	body io.ReadCloser // nil for a SeekableBlob, a HEAD, or a 416
}

func (ob openBlob) close() {
	if ob.body != nil {
		_ = ob.body.Close()
	}
	_ = ob.blob.Close()
}

// sizeOnly is what a HEAD needs of a blob a BlobStater sized: never opened.
type sizeOnly int64

func (s sizeOnly) Size() int64 { return int64(s) }

func (s sizeOnly) Open(context.Context, int64) (io.ReadCloser, error) {
	return nil, errors.New("registry: a blob sized for a HEAD is never opened")
}

func (sizeOnly) Close() error { return nil }

// serveBlob answers GET|HEAD /v2/<name>/blobs/<digest>.
func (h *handler) serveBlob(ex *exchange, name, reference string) {
	w, r := ex.w, ex.r
	ref, ok := h.parseRef(ex, name)
	if !ok {
		return
	}
	dgst, err := oci.ParseDigest(reference)
	if err != nil {
		writeError(w, r, http.StatusBadRequest, codeDigestInvalid, err.Error())
		return
	}
	rangeHeader := r.Header.Get("Range")
	// A source whose stream fails before its first byte has sent nothing,
	// not even the headers: the next source in the order answers instead.
	sources := h.cfg.Sources
	for len(sources) > 0 {
		f, err := firstAnswer(r.Context(), sources, h.cfg.LookupTimeout,
			func(ctx context.Context, src oci.Source) (openBlob, error) {
				return askBlob(ctx, src, ref, dgst, r.Method, rangeHeader)
			}, openBlob.close)
		if err != nil {
			h.log.Debug("blob not found", "ref", ref.String(), "digest", dgst, "err", err)
			break
		}
		ex.source = f.source.Name()
		next := h.writeBlob(ex, dgst, f)
		f.release()
		if !next {
			return
		}
		sources = sources[slices.Index(sources, f.source)+1:]
		w.Header().Del("Content-Length")
		w.Header().Del("Content-Range")
	}
	writeError(w, r, http.StatusNotFound, codeBlobUnknown, fmt.Sprintf("blob %s in %s unknown", dgst, ref))
}

// askBlob is one source's answer to a blob request: sized only for a HEAD
// it can size (BlobStater), else its Blob, opened at the requested range
// unless it is seekable, a HEAD, or the range cannot be satisfied.
func askBlob(ctx context.Context, src oci.Source, ref oci.Ref, dgst digest.Digest, method, rangeHeader string) (openBlob, error) {
	if st, ok := src.(oci.BlobStater); ok && method == http.MethodHead {
		size, err := st.StatBlob(ctx, ref, dgst)
		if err != nil {
			return openBlob{}, err
		}
		if size < 0 || (size == 0 && dgst != dgst.Algorithm().FromBytes(nil)) {
			return openBlob{}, fmt.Errorf("blob %s: source reports impossible size %d", dgst, size)
		}
		return openBlob{blob: sizeOnly(size), rng: parseRange(rangeHeader, size)}, nil
	}
	b, err := src.Blob(ctx, ref, dgst)
	if err != nil {
		return openBlob{}, err
	}
	if b == nil {
		return openBlob{}, fmt.Errorf("source returned no blob for %s", dgst)
	}
	size := b.Size()
	if size < 0 || (size == 0 && dgst != dgst.Algorithm().FromBytes(nil)) {
		_ = b.Close()
		return openBlob{}, fmt.Errorf("blob %s: source reports impossible size %d", dgst, size)
	}
	ob := openBlob{blob: b, rng: parseRange(rangeHeader, size)}
	if _, seekable := b.(oci.SeekableBlob); seekable || method == http.MethodHead || ob.rng.Kind == rangeUnsatisfiable {
		return ob, nil
	}
	ob.body, err = b.Open(ctx, ob.rng.Start)
	if err != nil {
		_ = b.Close()
		return openBlob{}, fmt.Errorf("blob %s: open at %d: %w", dgst, ob.rng.Start, err)
	}
	return ob, nil
}

// writeBlob sends the blob f's source answered with: its headers, then its
// range of bytes, cut off when the source stalls or fails. It reports next
// when it sent nothing because the source's stream failed before its first
// byte: then the caller asks the next source.
func (h *handler) writeBlob(ex *exchange, dgst digest.Digest, f found[openBlob]) (next bool) {
	w, r := ex.w, ex.r
	ob := f.value
	var closeOnce sync.Once
	closeBlob := func() { closeOnce.Do(ob.close) }
	defer closeBlob()

	size := ob.blob.Size()
	hd := w.Header()
	hd.Set("Docker-Content-Digest", dgst.String())
	hd.Set("Docker-Distribution-API-Version", apiVersion)
	hd.Set("Accept-Ranges", "bytes")
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set("Etag", `"`+dgst.String()+`"`)

	if ob.rng.Kind == rangeUnsatisfiable {
		hd.Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
		hd.Set("Content-Length", "0")
		w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
		return false
	}
	// A stalled source is cut off by cancelling its context and closing its
	// reader, which ends the blocked read with an error.
	source := ex.source
	onStall := func() {
		h.log.Warn("source stalled, aborting response", "source", source, "digest", dgst, "after", h.cfg.StallTimeout)
		f.cancel(oci.ErrStalled)
		closeBlob()
	}
	if sb, ok := ob.blob.(oci.SeekableBlob); ok {
		if ob.rng.Kind == rangeWhole && r.Header.Get("Range") != "" {
			// ServeContent would answer a malformed Range with 416 and
			// several ranges with multipart; both sources answer alike: 200.
			r = r.Clone(r.Context())
			r.Header.Del("Range")
		}
		h.serveSeekable(w, r, sb.ReadSeeker(), onStall)
		return false
	}
	return h.streamBlob(ex, dgst, ob, onStall)
}

// streamBlob sends the range ob opened of a blob that cannot seek. A
// stream read byte by byte waits for its first bytes before the headers
// go out, and reports next if it failed before any (see writeBlob):
// a swarm download whose peers all left fails its stream within seconds,
// and containerd, seeing the connection cut before the headers, would go
// to the upstream itself.
func (h *handler) streamBlob(ex *exchange, dgst digest.Digest, ob openBlob, onStall func()) (next bool) {
	w, r, hd := ex.w, ex.r, ex.w.Header()
	hd.Set("Content-Length", strconv.FormatInt(ob.rng.Length, 10))
	status := http.StatusOK
	if ob.rng.Kind == rangePartial {
		status = http.StatusPartialContent
		hd.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", ob.rng.Start, ob.rng.Start+ob.rng.Length-1, ob.blob.Size()))
	}
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return false
	}
	if spans, ok := ob.body.(oci.FileSpans); ok {
		w.WriteHeader(status)
		if err := h.sendSpans(w, spans, ob.rng.Length, onStall); err != nil {
			h.log.Warn("aborting blob response", "source", ex.source, "digest", dgst, "err", err)
			panic(http.ErrAbortHandler)
		}
		return false
	}
	watch := newStallWatch(ob.body, h.cfg.StallTimeout, onStall)
	defer watch.stop()
	bufp := h.buffers.Get().(*[]byte)
	defer h.buffers.Put(bufp)
	first := (*bufp)[:min(int64(len(*bufp)), ob.rng.Length)]
	var n int
	var err error
	sent := false
	if mv, ok := ob.body.(oci.Progressing); ok {
		n, sent, err = h.firstBytesMoving(ex, dgst, watch, first, mv, status)
	} else {
		n, err = readSome(watch, first)
	}
	if !sent {
		if n == 0 && err != nil && r.Context().Err() == nil {
			h.log.Info("source failed before its first byte: asking the next source", "source", ex.source, "digest", dgst, "err", err)
			return true
		}
		w.WriteHeader(status)
	}
	if _, werr := w.Write(first[:n]); werr != nil {
		return false // the client left
	}
	if err == nil {
		err = h.copyBlob(w, watch, ob.rng.Length-int64(n))
	} else if err == io.EOF && int64(n) < ob.rng.Length {
		err = fmt.Errorf("%w: %d bytes missing", errShortBlob, ob.rng.Length-int64(n))
	}
	if err != nil && err != io.EOF {
		h.log.Warn("aborting blob response", "source", ex.source, "digest", dgst, "err", err)
		// Never pad or finish a response with bytes we do not have: cut the
		// connection so containerd retries with Range.
		panic(http.ErrAbortHandler)
	}
	return false
}

// firstBytesMoving reads a Progressing stream's first bytes into p as
// readSome does, and, while they are late, looks every LookupTimeout
// whether the blob moved since the stream opened: once it did, the
// headers go out (sent) before the first byte, so containerd, which waits
// 30 s for them before it goes to its next host (the upstream), keeps
// waiting for a blob that comes; the stall watch bounds the wait. A
// followed download waits so for its first chunk when the upstream is
// slow, or for pieces many nodes want at once from a few holders.
func (h *handler) firstBytesMoving(ex *exchange, dgst digest.Digest, watch io.Reader, p []byte, mv oci.Progressing, status int) (n int, sent bool, err error) {
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	at := mv.Progress()
	go func() {
		n, err := readSome(watch, p)
		done <- result{n, err}
	}()
	look := time.NewTicker(h.cfg.LookupTimeout)
	defer look.Stop()
	for {
		select {
		case res := <-done:
			return res.n, sent, res.err
		case <-look.C:
			if sent || mv.Progress() <= at {
				continue
			}
			h.log.Info("first byte late while the blob moves: headers sent before it", "source", ex.source, "digest", dgst)
			ex.w.WriteHeader(status)
			_ = http.NewResponseController(ex.w).Flush()
			sent = true
		}
	}
}

// readSome reads into p until it holds at least one byte or the reader
// fails (an empty p reads nothing).
func readSome(r io.Reader, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := r.Read(p)
		if n > 0 || err != nil {
			return n, err
		}
	}
}

// sendSpans sends exactly n bytes from src's file spans through rf, which
// for a response on a TCP connection is sendfile: the bytes go from the page
// cache to the socket without a copy through user space. A failing or short
// source is returned, as copyBlob does; so is a failing send, which may be
// the file's read as well as the client's write (the response is cut off
// either way). The stall watch covers the waits for a span only.
func (h *handler) sendSpans(rf io.ReaderFrom, src oci.FileSpans, n int64, onStall func()) error {
	stall := time.AfterFunc(h.cfg.StallTimeout, onStall)
	defer stall.Stop()
	for n > 0 {
		stall.Reset(h.cfg.StallTimeout)
		f, avail, err := src.Span()
		stall.Stop()
		switch {
		case err == io.EOF:
			return fmt.Errorf("%w: %d bytes missing", errShortBlob, n)
		case err != nil:
			return err
		case avail <= 0:
			return fmt.Errorf("source offered a span of %d bytes", avail)
		}
		want := min(avail, n)
		sent, err := rf.ReadFrom(io.LimitReader(f, want))
		src.Sent(sent)
		n -= sent
		if err != nil {
			return fmt.Errorf("send after %d of %d bytes of a span: %w", sent, want, err)
		}
		if sent < want {
			return fmt.Errorf("%w: span of %d bytes ended after %d", errShortBlob, want, sent)
		}
	}
	return nil
}

// serveSeekable hands random-access content to http.ServeContent. An
// *os.File goes unwrapped so it leaves by sendfile; other readers get the
// stall watch and an error check, since ServeContent swallows read errors.
func (h *handler) serveSeekable(w http.ResponseWriter, r *http.Request, rs io.ReadSeeker, onStall func()) {
	if file, isFile := rs.(*os.File); isFile {
		http.ServeContent(w, r, "", time.Time{}, file)
		return
	}
	watch := newStallWatch(rs, h.cfg.StallTimeout, onStall)
	defer watch.stop()
	failing := &readErrors{r: watch}
	http.ServeContent(w, r, "", time.Time{}, struct {
		io.Reader
		io.Seeker
	}{failing, rs})
	if failing.err != nil {
		panic(http.ErrAbortHandler)
	}
}

// readErrors remembers the first read error other than io.EOF.
type readErrors struct {
	r   io.Reader
	err error
}

func (e *readErrors) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// errShortBlob is a source ending before the length it promised.
var errShortBlob = errors.New("source ended before the end of the blob")

// copyBlob sends exactly n bytes from src. A read error or a short source is
// returned; a write error means the client left and ends the copy quietly.
func (h *handler) copyBlob(w io.Writer, src io.Reader, n int64) error {
	bufp := h.buffers.Get().(*[]byte)
	defer h.buffers.Put(bufp)
	buf := *bufp
	for n > 0 {
		chunk := buf[:min(int64(len(buf)), n)]
		got, rerr := src.Read(chunk)
		if got > 0 {
			if _, werr := w.Write(chunk[:got]); werr != nil {
				return nil
			}
			n -= int64(got)
		}
		switch {
		case n == 0:
			return nil
		case rerr == io.EOF:
			return fmt.Errorf("%w: %d bytes missing", errShortBlob, n)
		case rerr != nil:
			return rerr
		}
	}
	return nil
}
