package diskcache

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

// evictLog records the order of evictions.
type evictLog struct{ keys []string }

func (l *evictLog) fn(key string) func() { return func() { l.keys = append(l.keys, key) } }

func newCache(t *testing.T, limit int64) *Cache {
	t.Helper()
	c, err := New(limit)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustAdmit(t *testing.T, c *Cache, log *evictLog, key string, size int64) *Entry {
	t.Helper()
	e, err := c.Admit(key, size, log.fn(key))
	if err != nil {
		t.Fatalf("Admit(%s, %d): %v", key, size, err)
	}
	return e
}

func TestEvictsLeastRecentlyUsedFirst(t *testing.T) {
	c := newCache(t, 100)
	var log evictLog
	a := mustAdmit(t, c, &log, "a", 30)
	b := mustAdmit(t, c, &log, "b", 30)
	d := mustAdmit(t, c, &log, "d", 30)
	for _, e := range []*Entry{a, b, d} {
		e.Unpin()
	}
	// a is read again: b is now the least recently used.
	if !a.Pin() {
		t.Fatal("Pin of a held entry failed")
	}
	a.Unpin()
	mustAdmit(t, c, &log, "e", 30)
	if want := []string{"b"}; !slices.Equal(log.keys, want) {
		t.Fatalf("evicted %v, want %v", log.keys, want)
	}
	mustAdmit(t, c, &log, "f", 60)
	if want := []string{"b", "d", "a"}; !slices.Equal(log.keys, want) {
		t.Fatalf("evicted %v, want %v", log.keys, want)
	}
	if got := c.Used(); got != 90 {
		t.Fatalf("used %d, want 90", got)
	}
	if b.Pin() {
		t.Fatal("an evicted entry could be pinned")
	}
	if got := gathered(t, c)["dregistry_cache_evictions_total"]; got != 3 {
		t.Fatalf("evictions counter %v, want 3", got)
	}
}

func TestPinnedEntriesAreNeverEvicted(t *testing.T) {
	c := newCache(t, 100)
	var log evictLog
	reading := mustAdmit(t, c, &log, "reading", 40) // never unpinned
	old := mustAdmit(t, c, &log, "old", 40)
	old.Unpin()
	if !old.Pin() { // a reader again
		t.Fatal("Pin failed")
	}
	if _, err := c.Admit("new", 30, log.fn("new")); !errors.Is(err, ErrFull) {
		t.Fatalf("Admit beyond the pinned entries: err = %v, want ErrFull", err)
	}
	if len(log.keys) != 0 || c.Used() != 80 {
		t.Fatalf("a failed Admit evicted %v (used %d)", log.keys, c.Used())
	}
	old.Unpin()
	mustAdmit(t, c, &log, "new", 30)
	if want := []string{"old"}; !slices.Equal(log.keys, want) {
		t.Fatalf("evicted %v, want %v", log.keys, want)
	}
	reading.Unpin()
}

func TestAdmitLargerThanTheLimitFailsAndEvictsNothing(t *testing.T) {
	c := newCache(t, 100)
	var log evictLog
	mustAdmit(t, c, &log, "a", 50).Unpin()
	if _, err := c.Admit("huge", 101, log.fn("huge")); !errors.Is(err, ErrFull) {
		t.Fatalf("err = %v, want ErrFull", err)
	}
	if len(log.keys) != 0 || c.Used() != 50 || c.Get("huge") != nil {
		t.Fatalf("state changed: evicted %v, used %d", log.keys, c.Used())
	}
}

func TestRemoveAndAddAgain(t *testing.T) {
	c := newCache(t, 100)
	var log evictLog
	a := mustAdmit(t, c, &log, "a", 40)
	a.Remove()
	a.Remove()
	if c.Used() != 0 || a.Pin() || len(log.keys) != 0 {
		t.Fatalf("after Remove: used %d, evicted %v", c.Used(), log.keys)
	}
	// A file rewritten (metainfo) replaces its account.
	c.Add("m", 10, log.fn("m-old"))
	c.Add("m", 12, log.fn("m"))
	if c.Used() != 12 || len(log.keys) != 0 {
		t.Fatalf("Add again: used %d, evicted %v", c.Used(), log.keys)
	}
	if _, err := c.Admit("m", 40, log.fn("m")); err == nil {
		t.Fatal("a key accounted already was admitted again")
	}
}

func TestAddedContentIsTrimmedByTheNextAdmission(t *testing.T) {
	c := newCache(t, 100)
	var log evictLog
	for i := range 5 {
		c.Add(fmt.Sprint("left", i), 30, log.fn(fmt.Sprint("left", i)))
	}
	if c.Used() != 150 {
		t.Fatalf("used %d", c.Used())
	}
	mustAdmit(t, c, &log, "new", 10)
	if want := []string{"left0", "left1"}; !slices.Equal(log.keys, want) {
		t.Fatalf("evicted %v, want %v", log.keys, want)
	}
}
