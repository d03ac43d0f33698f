package containerd

import (
	"context"
	"time"
)

// backoff doubles a wait from min to max; reset after a success.
type backoff struct {
	min, max, next time.Duration
}

func newBackoff(min, max time.Duration) *backoff {
	return &backoff{min: min, max: max, next: min}
}

func (b *backoff) reset() { b.next = b.min }

// wait sleeps for the next delay, or less when ctx ends; it reports whether
// the full delay passed.
func (b *backoff) wait(ctx context.Context) bool {
	d := b.next
	b.next = min(b.next*2, b.max)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
