// Package registry owns the OCI Distribution pull API that containerd calls on
// a mirror (and that peers call on each other), the upstream registry client,
// and manifest and tag resolution.
//
// It never stores content itself: every byte comes from a Source, tried in
// order (this node's containerd, then the swarm, then the egress or
// upstream). It never answers 401 and never waits on a source past its
// deadline: what cannot be served is a fast 404, so containerd moves on to its
// next host.
package registry
