package tracker

import (
	"fmt"
	"testing"
	"time"
)

func TestSeenSetPassesEachMessageOnceAndStaysBounded(t *testing.T) {
	s := newSeenSet(100, time.Minute)
	now := time.Unix(1000, 0)
	if !s.add([]byte("m1"), now) || s.add([]byte("m1"), now) {
		t.Fatal("a message must be new once, then seen")
	}
	for i := range 1000 {
		s.add(fmt.Appendf(nil, "flood-%d", i), now)
		if s.len() > 100 {
			t.Fatalf("the set holds %d hashes, bound is 100", s.len())
		}
	}
	// The newest are still remembered; the oldest were forgotten.
	if s.add([]byte("flood-999"), now) {
		t.Fatal("the newest message was forgotten")
	}
	if !s.add([]byte("m1"), now) {
		t.Fatal("the oldest message is still remembered past the bound")
	}
	// Time bound: two ttl periods later nothing older is remembered.
	s.add([]byte("tick-1"), now.Add(61*time.Second))
	s.add([]byte("tick-2"), now.Add(122*time.Second))
	if !s.add([]byte("flood-999"), now.Add(123*time.Second)) {
		t.Fatal("a message was remembered beyond two ttl periods")
	}
}
