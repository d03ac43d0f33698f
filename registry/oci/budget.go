package oci

import "time"

// The pull path's default budgets, the registry handler's defaults: a source
// gets DefaultLookupTimeout to start answering before the next is tried, and
// a response whose source delivers no byte for DefaultStallTimeout is cut
// off. They live at the bottom because the sources' inner waits derive from
// them (the swarm's, the egress's LookupBudget and FollowStall), and each is
// written once.
const (
	DefaultLookupTimeout = 5 * time.Second
	DefaultStallTimeout  = 30 * time.Second
)
