// Package preheat puts an image into the containerd of cluster members
// before anything asks for it (`dregistry swarm preheat`).
//
// Two endpoints, both streaming one JSON object a line (NDJSON):
//   - POST AdminPath (/admin/v1/preheat), the Coordinator: this host (no
//     token) or a member (signed token) may call it, as every /admin/v1/
//     path (peerauth.Gate.AdmitAdmin). It resolves the reference once,
//     through this node's own mirror, to a digest, then asks each chosen
//     member to preheat that digest and reports every member's progress.
//   - POST PeerPath (/peer/v1/preheat), the Runner: members only
//     (peerauth.Gate.AdmitPeer; this host gets nothing by being local).
//     The member fetches the image for its own platform through its own
//     mirror into its containerd and creates the image record. A second
//     request for the same image, digest and namespace joins the running
//     preheat instead of starting another.
//
// Platforms: each member fetches the platform it runs on (its daemon's
// runtime.GOOS/GOARCH), as kubelet on that node would pull: so the
// platforms fetched are those present in the cluster, each blob once
// from the upstream (by the egress), whatever the index lists besides.
//
// The package never talks to containerd or the network itself beyond the
// member requests: fetching is the Fetch function the daemon wires.
package preheat
