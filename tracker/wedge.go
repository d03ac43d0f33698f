package tracker

import (
	"fmt"
	"sync/atomic"
	"time"
)

// wedgeProbe tells whether gossip still makes progress. Every
// Config.StuckAfter/6 it takes t.mu (which every delegate callback takes)
// and then memberlist's node lock (NumMembers), one after the other, never
// nested, on a goroutine of its own. A probe that has not come back
// after StuckAfter means one of them is held for good: the node's gossip,
// probes and announcements are dead even though the process runs.
//
// At most one probe is out at a time, so a wedged node leaks exactly one
// goroutine, blocked where the dump will show the culprit.
type wedgeProbe struct {
	out      atomic.Int64 // start of the probe in flight (unix ns), 0 when none
	lastDone atomic.Int64 // end of the last probe that came back (unix ns)
}

// watchWedge runs the probes until Close.
func (t *Tracker) watchWedge() {
	defer t.wg.Done()
	tick := time.NewTicker(max(t.cfg.StuckAfter/6, time.Millisecond))
	defer tick.Stop()
	wedged := false
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		}
		now := time.Now()
		if t.wedge.out.CompareAndSwap(0, now.UnixNano()) {
			go t.probeLocks()
		}
		err := t.Stuck()
		switch {
		case err != nil && !wedged:
			t.log.Error("gossip is wedged: the node stops answering probes and announcements until it is restarted", "err", err)
		case err == nil && wedged:
			t.log.Info("gossip makes progress again")
		}
		wedged = err != nil
	}
}

func (t *Tracker) probeLocks() {
	t.mu.Lock() // getting the lock at all is the probe
	t.mu.Unlock()
	_ = t.ml.NumMembers()
	t.wedge.lastDone.Store(time.Now().UnixNano())
	t.wedge.out.Store(0)
}

// Stuck reports why gossip makes no progress: the tracker's lock or
// memberlist's node lock has not been free for Config.StuckAfter. Nil
// while it works. It never blocks, so a health endpoint can call it on a
// wedged node.
func (t *Tracker) Stuck() error {
	start := t.wedge.out.Load()
	if start == 0 {
		return nil
	}
	if held := time.Since(time.Unix(0, start)); held > t.cfg.StuckAfter {
		return fmt.Errorf("tracker: the gossip delegate has made no progress for %s (the tracker's lock or memberlist's node lock is held)", held.Round(time.Second))
	}
	return nil
}

// NumMembers is the number of live members, this node included, as the
// event delegate last recorded it. Unlike memberlist's own count it never
// waits for memberlist's lock.
func (t *Tracker) NumMembers() int { return int(t.live.Load()) }
