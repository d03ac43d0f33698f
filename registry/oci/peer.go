package oci

// NoForwardHeader marks a request from a peer: the receiver answers from
// local content or not at all, so requests cannot loop. The swarm's and
// the egress's peer endpoints require it, and every request a node sends
// to a peer carries it.
const NoForwardHeader = "X-Dregistry-No-Forward"
