// Package registry owns the OCI Distribution pull API that containerd calls on
// a mirror (and that peers call on each other), the upstream registry client,
// and manifest and tag resolution.
//
// It never stores content itself: every byte comes from a Source, tried in
// order (this node's containerd, then the swarm, then the egress or
// upstream). It never answers 401 and never waits on a source past its
// deadline: what cannot be served is a fast 404, so containerd moves on to its
// next host. A source failing once bytes have gone out aborts the response;
// it is never padded or completed.
//
// The API:
//
//	NewHandler(Config) http.Handler       // GET|HEAD /v2/, manifests, blobs; ?ns=<registry>
//	NewLocalSource(ContentStore) Source   // containerd's content and image stores
//	NewUpstream(UpstreamConfig) (*Upstream, error) // the registry named by ns, token auth
//	ParseRegistry, ParseRef, ParseReference, ParseDigest // input checks
//
// Every Source implementation runs the conformance suite in
// registry/sourcetest.
//
// Locks and callbacks: the handler holds no lock while it calls a Source or
// the Observer, so sources may block (each within its deadline). The
// package's mutexes — the upstream's transport cache and a pending upstream
// body — are leaves, never held across a request. Observer.Served is called
// on the request's goroutine after the response and must not block.
package registry
