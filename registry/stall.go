package registry

import (
	"io"
	"time"
)

// stallWatch calls onStall when a Read through it blocks longer than limit.
// Time spent writing to the client between reads does not count: a slow
// client is not a stalled source.
type stallWatch struct {
	r     io.Reader
	limit time.Duration
	timer *time.Timer
}

func newStallWatch(r io.Reader, limit time.Duration, onStall func()) *stallWatch {
	t := time.AfterFunc(limit, onStall)
	t.Stop()
	return &stallWatch{r: r, limit: limit, timer: t}
}

func (s *stallWatch) Read(p []byte) (int, error) {
	s.timer.Reset(s.limit)
	n, err := s.r.Read(p)
	s.timer.Stop()
	return n, err
}

// stop disarms the watch for good.
func (s *stallWatch) stop() { s.timer.Stop() }
