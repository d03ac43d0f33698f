package egress

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/tracker"
)

// trackerCluster adapts the tracker as the daemon should: this is the
// contract the egress relies on.
type trackerCluster struct{ t *tracker.Tracker }

func (c trackerCluster) Members() []Member {
	var out []Member
	for _, m := range c.t.Members() {
		out = append(out, Member{Name: m.Name, HTTPAddr: m.HTTPAddr, Egress: m.Egress})
	}
	return out
}

func (c trackerCluster) IsMember(ip netip.Addr) bool { return c.t.IsMember(ip) }

// Over the tracker's membership, every node asks the same owner first for a
// digest, with and without egress members, and that owner is an egress
// member when there is one.
func TestCandidatesAgreeOverTrackerViews(t *testing.T) {
	for _, egress := range [][]bool{{false, false, false}, {false, true, false}, {true, false, true}} {
		t.Run(fmt.Sprint(egress), func(t *testing.T) {
			network := &memberlist.MockNetwork{}
			var nodes []*tracker.Tracker
			for i, e := range egress {
				name := fmt.Sprintf("node-%d", i)
				tr, err := tracker.New(tracker.Config{
					Name: name, Transport: network.NewTransport(name),
					PeerHTTPAddr: fmt.Sprintf("127.0.0.1:%d", 5100+i),
					TorrentAddr:  netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", 6100+i)),
					Egress:       e, Logger: testLogger(),
				})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = tr.Close() })
				nodes = append(nodes, tr)
			}
			ctx := testCtx(t)
			first := nodes[0].Members()[0].GossipAddr.String()
			for _, tr := range nodes[1:] {
				if err := tr.Join(ctx, []string{first}); err != nil {
					t.Fatal(err)
				}
			}
			for _, tr := range nodes {
				for len(tr.Members()) < len(nodes) {
					select {
					case <-ctx.Done():
						t.Fatalf("%s sees %d members", tr.LocalName(), len(tr.Members()))
					case <-time.After(10 * time.Millisecond):
					}
				}
			}
			anyEgress := slices.Contains(egress, true)
			for k := range 100 {
				d := digest.FromString(fmt.Sprint("blob ", k))
				var first Member
				for i, tr := range nodes {
					view := trackerCluster{tr}
					self := Member{Name: tr.LocalName(), Egress: egress[i]}
					got := candidates(view.Members(), self, blobKey(d))[0]
					if anyEgress && !got.Egress {
						t.Fatalf("%s: digest %d: egress asks %s first, not an egress member", tr.LocalName(), k, got.Name)
					}
					if i > 0 && got.Name != first.Name {
						t.Fatalf("%s: digest %d: egress asks %s first, %s asks %s", tr.LocalName(), k, got.Name, nodes[0].LocalName(), first.Name)
					}
					first = got
				}
			}
		})
	}
}
