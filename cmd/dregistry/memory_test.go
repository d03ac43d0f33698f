package main

import (
	"sync/atomic"
	"testing"
	"time"
)

// Freed bytes below the threshold cost nothing; past it one collection
// runs after the gathering delay, however many frees came meanwhile; the
// next waits for the interval.
func TestMemoryReturnerGathersAndSpacesCollections(t *testing.T) {
	var runs atomic.Int64
	m := &memoryReturner{threshold: 100, delay: 50 * time.Millisecond, interval: 300 * time.Millisecond, free: func() { runs.Add(1) }}
	m.freed(60)
	time.Sleep(100 * time.Millisecond)
	if runs.Load() != 0 {
		t.Fatal("a collection ran below the threshold")
	}
	start := time.Now()
	for range 5 {
		m.freed(60)
	}
	waitRuns(t, &runs, 1)
	m.freed(200)
	waitRuns(t, &runs, 2)
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("two collections %s apart, interval 300ms", took)
	}
	time.Sleep(100 * time.Millisecond)
	if n := runs.Load(); n != 2 {
		t.Fatalf("%d collections, want 2", n)
	}
}

func waitRuns(t *testing.T, runs *atomic.Int64, n int64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if runs.Load() >= n {
			return
		}
	}
	t.Fatalf("collection %d did not run within 5s", n)
}
