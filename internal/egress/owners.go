package egress

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"slices"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/registry/oci"
)

// Member is a live cluster member as the egress sees it.
type Member struct {
	Name     string // unique member name
	HTTPAddr string // host:port of its peer HTTP endpoint
	Egress   bool   // it may reach upstream registries
}

// Cluster is the membership view (the tracker).
type Cluster interface {
	// Members lists the live members, this node included.
	Members() []Member
}

// candidates ranks who fetches key from upstream: the live egress members,
// or every member when none is egress, by rendezvous score (the one hash
// that picks an egress node; every member ranks alike for the same
// membership). self is counted as a member even when the view lacks it.
func candidates(members []Member, self Member, key string) []Member {
	if !slices.ContainsFunc(members, func(m Member) bool { return m.Name == self.Name }) {
		members = append(slices.Clone(members), self)
	}
	var pool []Member
	for _, m := range members {
		if m.Egress {
			pool = append(pool, m)
		}
	}
	if len(pool) == 0 {
		pool = slices.Clone(members)
	}
	scores := make(map[string]uint64, len(pool))
	for _, m := range pool {
		h := sha256.Sum256([]byte(m.Name + "\x00" + key))
		scores[m.Name] = binary.BigEndian.Uint64(h[:8])
	}
	slices.SortFunc(pool, func(a, b Member) int {
		if c := cmp.Compare(scores[b.Name], scores[a.Name]); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return pool
}

// blobKey is the rendezvous key of a digest (blobs and manifests).
func blobKey(d digest.Digest) string { return string(d) }

// tagKey is the rendezvous key of a tag of one repository.
func tagKey(ref oci.Ref, tag string) string { return "tag\x00" + ref.String() + ":" + tag }

// mayFetch reports whether this node may call an upstream: it is an egress
// node, or the cluster has none.
func mayFetch(members []Member, selfEgress bool) bool {
	if selfEgress {
		return true
	}
	for _, m := range members {
		if m.Egress {
			return false
		}
	}
	return true
}
