package main

import (
	"runtime/debug"
	"sync"
	"time"
)

// memoryReturner hands memory back to the OS once the swarm let go of a
// lot of piece buffers (swarm.Config.Freed): the runtime would otherwise
// keep them until its next GC, which an idle daemon runs only every two
// minutes, and return them slowly after that. Freed bytes are gathered for
// a moment, so the streams of one pull that close together cost one
// collection, and collections are at least interval apart.
type memoryReturner struct {
	threshold int64         // bytes freed before a collection is worth it
	delay     time.Duration // gathering time after the threshold is reached
	interval  time.Duration // least time between two collections
	free      func()        // debug.FreeOSMemory; replaced in tests

	mu      sync.Mutex
	pending int64
	timer   *time.Timer
	last    time.Time
}

func newMemoryReturner() *memoryReturner {
	return &memoryReturner{threshold: 32 << 20, delay: 2 * time.Second, interval: 30 * time.Second, free: debug.FreeOSMemory}
}

// freed notes n bytes let go; it never blocks (the swarm calls it under
// its lock).
func (m *memoryReturner) freed(n int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pending += n
	if m.pending < m.threshold || m.timer != nil {
		return
	}
	wait := max(m.delay, m.interval-time.Since(m.last))
	m.timer = time.AfterFunc(wait, m.run)
}

func (m *memoryReturner) run() {
	m.mu.Lock()
	m.pending = 0
	m.mu.Unlock()
	m.free()
	m.mu.Lock()
	m.timer, m.last = nil, time.Now()
	m.mu.Unlock()
}
