package registry

import (
	"io"
	"net/http"
	"time"
)

// recorder notes status, bytes and time to first byte of a response. It keeps
// io.ReaderFrom so http.ServeContent still reaches sendfile for *os.File.
type recorder struct {
	http.ResponseWriter
	start  time.Time
	status int
	bytes  int64
	ttfb   time.Duration
	// streamed, if set, hears body bytes as they are written.
	streamed func(int64)
}

// streamSegment is the most a ReadFrom sends before the bytes are counted:
// sendfile moves a whole blob in one call otherwise.
const streamSegment = 1 << 20

func (rec *recorder) count(n int64) {
	rec.bytes += n
	if rec.streamed != nil && n > 0 {
		rec.streamed(n)
	}
}

func newRecorder(w http.ResponseWriter, start time.Time) *recorder {
	return &recorder{ResponseWriter: w, start: start}
}

func (rec *recorder) WriteHeader(status int) {
	if rec.status == 0 {
		rec.status = status
		rec.ttfb = time.Since(rec.start)
	}
	rec.ResponseWriter.WriteHeader(status)
}

func (rec *recorder) Write(p []byte) (int, error) {
	if rec.status == 0 {
		rec.WriteHeader(http.StatusOK)
	}
	n, err := rec.ResponseWriter.Write(p)
	rec.count(int64(n))
	return n, err
}

func (rec *recorder) ReadFrom(src io.Reader) (int64, error) {
	if rec.status == 0 {
		rec.WriteHeader(http.StatusOK)
	}
	rf, ok := rec.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(struct{ io.Writer }{rec}, src) // counted by Write
	}
	// Segments of a limited reader over the source itself, so an *os.File
	// still reaches sendfile (which unwraps one *io.LimitedReader only).
	outer, _ := src.(*io.LimitedReader)
	inner, left := src, int64(-1)
	if outer != nil {
		inner, left = outer.R, outer.N
	}
	var total int64
	for left != 0 {
		seg := int64(streamSegment)
		if left > 0 {
			seg = min(seg, left)
		}
		n, err := rf.ReadFrom(&io.LimitedReader{R: inner, N: seg})
		total += n
		rec.count(n)
		if left > 0 {
			left -= n
			outer.N = left
		}
		if err != nil || n < seg {
			return total, err // failed, or the source ended
		}
	}
	return total, nil
}

// Unwrap lets http.ResponseController reach the connection.
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }
