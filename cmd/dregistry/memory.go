package main

import (
	"runtime/debug"
	"sync"
	"time"
)

// memoryReturner hands memory back to the OS once the swarm's downloads
// let go of many piece buffers (swarm.Config.Freed) and then went quiet:
// the runtime would otherwise keep them until its next GC, which an idle
// daemon runs only every two minutes, and return them slowly after that.
// While buffers keep being freed (transfers running) nothing is done — the
// runtime's own collections bound the heap then, and memory handed back
// would only be faulted in again.
type memoryReturner struct {
	threshold int64         // bytes freed before a collection is worth it
	quiet     time.Duration // no free for this long: the work is done
	free      func()        // debug.FreeOSMemory; replaced in tests

	mu      sync.Mutex
	pending int64
	timer   *time.Timer
}

func newMemoryReturner() *memoryReturner {
	return &memoryReturner{threshold: 32 << 20, quiet: 3 * time.Second, free: debug.FreeOSMemory}
}

// freed notes n bytes let go; it never blocks (the swarm calls it under
// its locks).
func (m *memoryReturner) freed(n int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pending += n
	if m.pending < m.threshold {
		return
	}
	if m.timer != nil {
		m.timer.Reset(m.quiet)
		return
	}
	m.timer = time.AfterFunc(m.quiet, m.run)
}

func (m *memoryReturner) run() {
	m.mu.Lock()
	m.pending, m.timer = 0, nil
	m.mu.Unlock()
	m.free()
}
