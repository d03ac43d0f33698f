// Package writeprogress cuts an HTTP response that makes no write progress
// for a while. The daemon's server has no write deadline (a blob takes as
// long as it takes), so a client that stops reading would pin the handler's
// goroutine, its source's reader and its buffers for as long as the
// connection lives. Handler gives each response a write deadline that every
// write which goes through pushes forward: a slow client keeps its
// response, a client that stopped reading loses it after the timeout.
package writeprogress

import (
	"errors"
	"io"
	"net/http"
	"os"
	"time"
)

// segment is the most one write may send under one deadline: a response
// is cut when this much could not be sent within the timeout (below
// 64 KiB / 30 s ≈ 2 KiB/s at the default stall timeout).
const segment = 64 << 10

// Handler wraps next so that each of its responses is cut (the connection
// closed under it) once a write makes no progress for timeout. The
// deadline is cleared when next returns, so other handlers sharing the
// connection (keep-alive) are not affected. A timeout of zero or less
// returns next.
func Handler(next http.Handler, timeout time.Duration) http.Handler {
	if timeout <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pw := &writer{ResponseWriter: w, rc: http.NewResponseController(w), timeout: timeout}
		next.ServeHTTP(pw, r)
		// Not deferred: a handler that panics (http.ErrAbortHandler) has
		// its connection closed by the server, deadline and all.
		pw.finish()
	})
}

// writer extends the connection's write deadline before each segment it
// writes. It keeps io.ReaderFrom so files still leave by sendfile.
type writer struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	armed   bool
}

func (w *writer) extend() {
	// A writer the server does not let us bound (a test recorder, HTTP/2
	// without support) is left as it is.
	if err := w.rc.SetWriteDeadline(time.Now().Add(w.timeout)); err == nil {
		w.armed = true
	}
}

func (w *writer) Write(p []byte) (int, error) {
	var done int
	for len(p) > 0 {
		w.extend()
		n, err := w.ResponseWriter.Write(p[:min(len(p), segment)])
		done += n
		if err != nil {
			return done, err
		}
		p = p[n:]
	}
	return done, nil
}

// ReadFrom sends src segment by segment through the response's own
// ReadFrom. A *io.LimitedReader over a file (what http.ServeContent and
// the registry hand over) is re-cut at one level, so the connection still
// sees a limited *os.File and uses sendfile.
func (w *writer) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(struct{ io.Writer }{w}, src)
	}
	inner, limit := src, int64(-1)
	if lr, ok := src.(*io.LimitedReader); ok {
		inner, limit = lr.R, lr.N
		defer func() { lr.N = limit }()
	}
	if _, isFile := inner.(*os.File); !isFile && limit < 0 {
		return io.Copy(struct{ io.Writer }{w}, src)
	}
	var total int64
	for limit != 0 {
		n := int64(segment)
		if limit > 0 {
			n = min(n, limit)
		}
		w.extend()
		sent, err := rf.ReadFrom(&io.LimitedReader{R: inner, N: n})
		total += sent
		if limit > 0 {
			limit -= sent
		}
		if err != nil {
			return total, err
		}
		if sent < n {
			return total, nil // the source ended
		}
	}
	return total, nil
}

// FlushError flushes under the deadline too.
func (w *writer) FlushError() error {
	w.extend()
	return w.rc.Flush()
}

// Flush implements http.Flusher for handlers that assert it.
func (w *writer) Flush() { _ = w.FlushError() }

// Unwrap lets http.ResponseController reach the connection.
func (w *writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// finish sends what the response still buffers under the deadline, then
// clears it for the next request on the connection.
func (w *writer) finish() {
	if !w.armed {
		return
	}
	w.extend()
	if err := w.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return
	}
	_ = w.rc.SetWriteDeadline(time.Time{})
}
