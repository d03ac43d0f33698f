package seeding

import (
	"context"
	"time"

	"github.com/opencontainers/go-digest"
)

// announceRetry is when a pass whose tracker call failed runs again: the
// tracker refuses only what it cannot hold, which no event would retry.
const announceRetry = time.Second

// announceLoop announces on every change of the swarm's holdings, and on
// digests others announced meanwhile (reannounce), until ctx ends.
func (s *Seeder) announceLoop(ctx context.Context) {
	var retry <-chan time.Time
	for {
		s.announceAlive.busy()
		if !s.announce() {
			retry = time.After(announceRetry)
		}
		s.announceAlive.idle()
		select {
		case <-ctx.Done():
			return
		case <-s.swarm.Changes():
		case <-s.rewake:
		case <-retry:
			retry = nil
		}
	}
}

// announce makes the tracker say exactly what the swarm can serve: what
// the peer endpoints serve (swarm Holdings true) as complete, every other
// blob as partial — a verified download trades pieces but is not served
// over HTTP until containerd's copy is seeded. Only what differs from the
// last pass is told. It reports whether every call succeeded; a failed one
// is tried again on the next pass.
func (s *Seeder) announce() bool {
	s.mu.Lock()
	for d := range s.reannounce {
		delete(s.announced, d) // someone else changed its announcement
	}
	clear(s.reannounce)
	s.mu.Unlock()

	ok := true
	holdings := s.swarm.Holdings()
	for d, complete := range holdings {
		was, known := s.announced[d]
		if known && was == complete {
			continue
		}
		if known && was && !complete {
			// A partial announcement of a complete digest changes
			// nothing in the tracker: withdraw it first.
			if !s.tell(s.tracker.Withdraw(d), "withdraw", d) {
				ok = false
				continue
			}
			delete(s.announced, d)
		}
		if !s.tell(s.tracker.Announce(d, complete), "announce", d) {
			ok = false
			continue
		}
		s.announced[d] = complete
	}
	for d := range s.announced {
		if _, held := holdings[d]; held {
			continue
		}
		if !s.tell(s.tracker.Withdraw(d), "withdraw", d) {
			ok = false
			continue
		}
		delete(s.announced, d)
	}
	return ok
}

func (s *Seeder) tell(err error, what string, d digest.Digest) bool {
	if err != nil {
		s.log.Warn(what, "digest", d, "err", err)
		return false
	}
	return true
}

// announcedElsewhere makes the announcer check d again on its next pass:
// a component that announces d itself (Growing, which must not wait for
// the loop) may have overwritten what the announcer said.
func (s *Seeder) announcedElsewhere(d digest.Digest) {
	s.mu.Lock()
	s.reannounce[d] = true
	s.mu.Unlock()
	poke(s.rewake)
}
