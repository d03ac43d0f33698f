package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dregistry/dregistry/registry/oci"
)

// found is the first answer a source gave. The context the source got stays
// alive, for streaming, until release is called.
type found[T any] struct {
	value  T
	source oci.Source
	cancel context.CancelCauseFunc // ends the source's context, with a cause
}

func (f found[T]) release() { f.cancel(context.Canceled) }

// errLookupTimeout is the cause recorded when a source missed its deadline.
var errLookupTimeout = errors.New("source did not answer within the lookup timeout")

type answer[T any] struct {
	value T
	err   error
}

// firstAnswer asks the sources in order; each gets timeout to answer. A
// source that misses it is abandoned, not waited for: its cancelled call
// runs out in the background and a late value goes to discard. The error
// lists why every source failed.
func firstAnswer[T any](ctx context.Context, sources []oci.Source, timeout time.Duration,
	ask func(context.Context, oci.Source) (T, error), discard func(T),
) (found[T], error) {
	var errs []error
	for _, src := range sources {
		sctx, cancel := context.WithCancelCause(ctx)
		replies := make(chan answer[T], 1)
		go func() {
			v, err := ask(sctx, src)
			replies <- answer[T]{v, err}
		}()
		abandon := func(cause error) {
			cancel(cause)
			go func() {
				if a := <-replies; a.err == nil && discard != nil {
					discard(a.value)
				}
			}()
		}
		timer := time.NewTimer(timeout)
		select {
		case a := <-replies:
			timer.Stop()
			if a.err == nil {
				return found[T]{value: a.value, source: src, cancel: cancel}, nil
			}
			cancel(a.err)
			errs = append(errs, fmt.Errorf("%s: %w", src.Name(), a.err))
		case <-timer.C:
			abandon(errLookupTimeout)
			errs = append(errs, fmt.Errorf("%s: %w after %s", src.Name(), errLookupTimeout, timeout))
		case <-ctx.Done():
			timer.Stop()
			abandon(context.Cause(ctx))
			return found[T]{}, fmt.Errorf("request ended during lookup: %w", context.Cause(ctx))
		}
	}
	if len(errs) == 0 {
		return found[T]{}, fmt.Errorf("no source configured: %w", oci.ErrNotFound)
	}
	return found[T]{}, errors.Join(errs...)
}
