package egress

import (
	"fmt"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestCandidates(t *testing.T) {
	key := blobKey(digest.FromString("layer"))
	plain := []Member{{Name: "a"}, {Name: "b"}, {Name: "c"}}
	mixed := []Member{{Name: "a"}, {Name: "e1", Egress: true}, {Name: "b"}, {Name: "e2", Egress: true}}

	names := func(ms []Member) (out []string) {
		for _, m := range ms {
			out = append(out, m.Name)
		}
		return out
	}
	if got := names(candidates(mixed, Member{Name: "a"}, key)); len(got) != 2 || got[0][0] != 'e' || got[1][0] != 'e' {
		t.Errorf("with egress members: %v, want only e1 and e2", got)
	}
	if got := candidates(plain, Member{Name: "a"}, key); len(got) != 3 {
		t.Errorf("without egress members: %v, want every member", names(got))
	}
	if got := candidates(nil, Member{Name: "self"}, key); len(got) != 1 || got[0].Name != "self" {
		t.Errorf("empty view: %v, want self", names(got))
	}
	if got := candidates(plain, Member{Name: "x", Egress: true}, key); len(got) != 1 || got[0].Name != "x" {
		t.Errorf("self egress missing from the view: %v, want x", names(got))
	}

	// Every node ranks alike whatever order its view lists members in, and
	// removing the owner promotes the second (ownership follows membership).
	reversed := []Member{plain[2], plain[1], plain[0]}
	a, b := names(candidates(plain, Member{Name: "a"}, key)), names(candidates(reversed, Member{Name: "c"}, key))
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("rankings differ: %v and %v", a, b)
	}
	var rest []Member
	for _, m := range plain {
		if m.Name != a[0] {
			rest = append(rest, m)
		}
	}
	if got := names(candidates(rest, Member{Name: rest[0].Name}, key)); fmt.Sprint(got) != fmt.Sprint(a[1:]) {
		t.Errorf("after %s left: %v, want %v", a[0], got, a[1:])
	}

	// Keys spread over the candidates.
	owners := map[string]int{}
	for i := range 300 {
		owners[candidates(plain, Member{Name: "a"}, blobKey(digest.FromString(fmt.Sprint(i))))[0].Name]++
	}
	for _, m := range plain {
		if owners[m.Name] < 50 {
			t.Errorf("owner counts %v: %s owns too few of 300 keys", owners, m.Name)
		}
	}
}

func TestMayFetch(t *testing.T) {
	if !mayFetch([]Member{{Name: "a"}}, false) {
		t.Error("no egress member: every node may fetch")
	}
	if mayFetch([]Member{{Name: "a"}, {Name: "e", Egress: true}}, false) {
		t.Error("a plain node may fetch while an egress member lives")
	}
	if !mayFetch([]Member{{Name: "e", Egress: true}}, true) {
		t.Error("an egress node may not fetch")
	}
}
