// Package containerd owns dregistry's view of the node's containerd: content
// reads, the inventory of digests held in every namespace (events plus
// periodic resync, since garbage collection is silent), and the hosts.toml
// files that make containerd use dregistry as its mirror.
package containerd
