// Package registry owns the OCI Distribution pull API that containerd calls
// on a mirror (and that peers call on each other) and manifest and tag
// resolution: the handler on top of every content source.
//
// The layers: registry/oci, at the bottom, is the vocabulary every source
// and this handler share (Source, Blob, Ref, the parsers, the errors);
// registry/upstream is the upstream registry client, one Source among
// others beside the swarm and the egress; this package imports them
// through oci's interfaces and is imported by nothing but cmd (and tests).
// The swarm and the egress never import it.
//
// It never stores content itself: every byte comes from an oci.Source,
// tried in order (this node's containerd, then the swarm, then the egress
// or upstream). It never answers 401 and never waits on a source past its
// deadline: what cannot be served is a fast 404, so containerd moves on to
// its next host. A streamed blob's headers go out with its first bytes: a
// source whose stream fails or stalls before them has sent nothing, and
// the next source answers. Only a stream that says its blob moves
// (oci.Progressing: the egress following a download in the swarm) gets
// its headers sent before a late first byte, once the blob moved, so
// containerd does not leave for the upstream while the blob comes; the
// stall watch waits as long as such a blob moves. A source failing once
// the headers have gone out aborts the response; it is never padded or
// completed.
//
// The API:
//
//	NewHandler(Config) http.Handler          // GET|HEAD /v2/, manifests, blobs; ?ns=<registry>
//	DefaultConfig() Config; Config.Validate() error
//	NewLocalSource(ContentStore) oci.Source  // containerd's content and image stores
//	NewClients(ClientsConfig) *Clients       // who may use the mirror
//	DefaultClientsConfig() ClientsConfig; ClientsConfig.Validate() error
//	ParseMirrorAllow([]string) ([]netip.Prefix, error) // --mirror-allow
//
// Every Source implementation runs the conformance suite in
// registry/sourcetest.
//
// Locks and callbacks: the handler holds no lock while it calls a Source or
// the Observer, so sources may block (each within its deadline). The
// package's mutex — the mirror clients' address list — is a leaf, never
// held across a request. Observer.Served is called on the request's
// goroutine after the response and must not block.
package registry
