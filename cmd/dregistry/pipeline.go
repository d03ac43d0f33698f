package main

import (
	"github.com/dregistry/dregistry/internal/egress"
	"github.com/dregistry/dregistry/swarm"
)

// The swarm's side of the pipelined cold path (issue 13, /work/wt/CHUNKS.md:
// Swarm.Grow, Swarm.Follow) is built on another branch; until it is here
// these adapters return nil and the egress works as before (no growth, every
// node streams from the owner).

// swarmGrow is sw.Grow as the egress's OnStart needs it; nil: none.
func swarmGrow(sw *swarm.Swarm) growFunc { return nil }

// swarmPipeline is sw.Follow as egress.SourceConfig.Pipeline; nil: none.
func swarmPipeline(sw *swarm.Swarm) egress.Pipeline { return nil }
