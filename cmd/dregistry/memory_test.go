package main

import (
	"sync/atomic"
	"testing"
	"time"
)

// Freed bytes below the threshold cost nothing; past it, nothing runs while
// frees keep coming, and one collection runs once they stopped for the
// quiet time.
func TestMemoryReturnerCollectsOnceTheFreesGoQuiet(t *testing.T) {
	var runs atomic.Int64
	m := &memoryReturner{threshold: 100, quiet: 150 * time.Millisecond, free: func() { runs.Add(1) }}
	m.freed(60)
	time.Sleep(300 * time.Millisecond)
	if runs.Load() != 0 {
		t.Fatal("a collection ran below the threshold")
	}
	for range 15 { // 450 ms of frees, 30 ms apart
		m.freed(60)
		time.Sleep(30 * time.Millisecond)
	}
	if n := runs.Load(); n != 0 {
		t.Fatalf("%d collections while frees kept coming", n)
	}
	for deadline := time.Now().Add(5 * time.Second); runs.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if n := runs.Load(); n != 1 {
		t.Fatalf("%d collections after the frees stopped, want 1", n)
	}
}
