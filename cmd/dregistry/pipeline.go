package main

import (
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/egress"
	"github.com/dregistry/dregistry/internal/seeding"
	"github.com/dregistry/dregistry/swarm"
)

// The pipelined cold path (issue 13): the egress owner seeds a download
// while it arrives (swarm Grow, driven by the fetcher's Progress) and the
// other nodes follow it in the swarm (Follow as the egress's Pipeline).

// swarmGrow is sw.Grow as the egress's OnStart needs it.
func swarmGrow(sw *swarm.Swarm) seeding.GrowFunc {
	return func(d digest.Digest, size int64, file io.ReaderAt) (egress.Progress, error) {
		g, err := sw.Grow(d, size, file)
		if err != nil {
			return nil, err // never a nil *Growth inside a non-nil Progress
		}
		return g, nil
	}
}

// swarmPipeline is sw.Follow as egress.SourceConfig.Pipeline.
func swarmPipeline(sw *swarm.Swarm) egress.Pipeline { return sw }

// swarmPrefix is sw.Prefix as egress.FetcherConfig.Prefix: a candidate
// that takes over a download whose owner died starts from the chunks the
// followers hold, and asks the upstream for the rest only.
func swarmPrefix(sw *swarm.Swarm) egress.Prefix { return sw }
