// Package upstream is the client of the upstream registries: an oci.Source
// (Client, named "upstream") that fetches manifests, tags and blobs from
// the registry a request names, with the registry token flow of
// go-containerregistry and the pull credentials of one docker config.json
// the operator named (never the daemon's $HOME or $DOCKER_CONFIG).
//
// It fetches only from registries the operator named (Config.Allow,
// PlainHTTP, those with credentials) and never dials link-local, metadata
// or, unless named, private and loopback addresses, on redirects too
// (internal/upstreampolicy). Each request is built here, so no header of
// containerd's reaches an upstream. Every byte is checked: a blob's reader
// verifies the digest before it returns the last byte (oci.VerifyingBlob);
// OpenFrom's ranged bodies (oci.ResumableBlob) are for a caller that
// hashes the whole blob itself.
//
//	DefaultConfig() Config; Config.Validate() error
//	New(Config) (*Client, error)
//	(*Client).Policy() *upstreampolicy.Policy // the allow-list, for the handlers
//
// It imports registry/oci and internal packages only, never the handler
// (registry) above it. Locks: the transport cache's mutex and a pending
// body's are leaves, never held across a request.
package upstream
