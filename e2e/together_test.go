package e2e

import (
	"sync"
	"time"
)

// atOnce runs do(0) … do(n-1) in goroutines released at the same moment and
// returns each one's error and the time until the last one returned.
func atOnce(n int, do func(i int) error) ([]error, time.Duration) {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = do(i)
		}()
	}
	began := time.Now()
	close(start)
	wg.Wait()
	return errs, time.Since(began)
}
