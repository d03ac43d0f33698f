package peerauth

import (
	"testing"
	"time"
)

// FuzzToken: any header value is parsed and verified without panicking,
// and only a token this cluster signed for this request verifies.
func FuzzToken(f *testing.F) {
	k, err := New([][]byte{key(1)})
	if err != nil {
		f.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	f.Add(k.Sign("node-1", "GET", "10.0.0.2:5000", "/peer/v1/blobs/x", now), "GET", "/peer/v1/blobs/x")
	f.Add("v1:bm9kZQ:1800000000:"+string(make([]byte, 43)), "HEAD", "/admin/v1/stats")
	f.Add("v1:::", "GET", "/")
	f.Fuzz(func(t *testing.T, tok, method, uri string) {
		parsed, perr := parseToken(tok)
		node, verr := k.verify(tok, method, "10.0.0.2:5000", uri, now)
		if perr != nil && verr == nil {
			t.Fatalf("Verify accepted a token parseToken refused: %v", perr)
		}
		if verr == nil {
			if node != parsed.Node {
				t.Fatalf("Verify named %q, parseToken %q", node, parsed.Node)
			}
			if k.Sign(node, method, "10.0.0.2:5000", uri, parsed.At) != tok {
				t.Fatalf("verified a token that is not the signature of its request: %q", tok)
			}
		}
		if perr == nil && len(parsed.Node) == 0 {
			t.Fatal("parsed an empty node name")
		}
	})
}
