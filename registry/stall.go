package registry

import (
	"io"
	"sync"
	"time"
)

// stallWatch calls onStall when a Read through it blocks longer than limit.
// Time spent writing to the client between reads does not count: a slow
// client is not a stalled source. With progress (an oci.Progressing
// stream), a blocked Read stalls only once progress has not grown for
// limit: it is looked at every limit/2 while the Read waits, and a Read
// that began, or a look that saw growth, starts the count again, so a
// Read blocks at most limit after the blob last moved (within limit/2).
type stallWatch struct {
	r        io.Reader
	limit    time.Duration
	onStall  func()
	progress func() int64 // nil: no blob that moves while a Read waits

	mu      sync.Mutex
	timer   *time.Timer
	reading bool      // a Read is blocked in r
	due     time.Time // when the watch next acts for that Read
	looked  bool      // progress was looked at during that Read
	seen    int64     // what it said then
}

func newStallWatch(r io.Reader, limit time.Duration, onStall func()) *stallWatch {
	s := &stallWatch{r: r, limit: limit, onStall: onStall}
	if p, ok := r.(interface{ Progress() int64 }); ok {
		s.progress = p.Progress
	}
	s.timer = time.AfterFunc(limit, s.fired)
	s.timer.Stop()
	return s
}

// step is how long a blocked Read goes before the watch acts.
func (s *stallWatch) step() time.Duration {
	if s.progress != nil {
		return s.limit / 2
	}
	return s.limit
}

func (s *stallWatch) Read(p []byte) (int, error) {
	s.mu.Lock()
	s.reading, s.looked = true, false
	s.due = time.Now().Add(s.step())
	s.timer.Reset(s.step())
	s.mu.Unlock()
	n, err := s.r.Read(p)
	s.mu.Lock()
	s.reading = false
	s.timer.Stop()
	s.mu.Unlock()
	return n, err
}

// fired is the timer's: a run meant for an earlier Read (the timer went off
// as that Read returned) finds a later due time, or no Read, and does
// nothing.
func (s *stallWatch) fired() {
	if !s.actNow() {
		return
	}
	var p int64
	if s.progress != nil {
		p = s.progress() // no lock held: it takes the source's
	}
	s.mu.Lock()
	if !s.reading || time.Now().Before(s.due) { // the Read returned, or a new one began
		s.mu.Unlock()
		return
	}
	if s.progress != nil && (!s.looked || p > s.seen) {
		s.looked, s.seen = true, p
		s.due = time.Now().Add(s.limit / 2)
		s.timer.Reset(s.limit / 2)
		s.mu.Unlock()
		return
	}
	s.reading = false
	s.mu.Unlock()
	s.onStall()
}

func (s *stallWatch) actNow() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reading && !time.Now().Before(s.due)
}

// stop disarms the watch for good.
func (s *stallWatch) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reading = false
	s.timer.Stop()
}
