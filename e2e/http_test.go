package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/internal/testenv"
)

// requestTimeout bounds one HTTP exchange of a test; the mirror must never hang.
const requestTimeout = 30 * time.Second

// manifestAccept is the Accept header containerd sends when it resolves a tag.
var manifestAccept = strings.Join([]string{
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	ocispec.MediaTypeImageManifest,
	ocispec.MediaTypeImageIndex,
	"*/*",
}, ", ")

// reply is a finished HTTP exchange.
type reply struct {
	Status int
	Header http.Header
	Body   []byte
}

// do sends one request with headers given as "Key: value" pairs.
func do(t testing.TB, method, url string, headers ...string) reply {
	t.Helper()
	return doWith(t, nil, method, url, headers...)
}

// memberGet GETs a member-only path (/peer/v1/…, /admin/v1/…) of n as a
// member would: signed with n's cluster key.
func memberGet(t testing.TB, n *testenv.Node, path string, headers ...string) reply {
	t.Helper()
	return doWith(t, n.Key, http.MethodGet, n.URL()+path, headers...)
}

// doWith is do, signed with key when it is not nil.
func doWith(t testing.TB, key *testenv.ClusterKey, method, url string, headers ...string) reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	for _, h := range headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			t.Fatalf("header %q: want \"Key: value\"", h)
		}
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	// Redirects are answers too: a mirror must not turn a bad name into a good one.
	client := key.Client(requestTimeout)
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return reply{Status: resp.StatusCode, Header: resp.Header, Body: body}
}

// errorCode returns the first OCI error code of a body, or "" when it is
// not an OCI error document.
func errorCode(body []byte) string {
	var doc struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &doc) != nil || len(doc.Errors) == 0 {
		return ""
	}
	return doc.Errors[0].Code
}

// checkHeader reports a header whose value differs from want.
func checkHeader(t testing.TB, what string, r reply, key, want string) {
	t.Helper()
	if got := r.Header.Get(key); got != want {
		t.Errorf("%s: %s = %q, want %q", what, key, got, want)
	}
}

// checkDigest reports a body whose digest is not want.
func checkDigest(t testing.TB, what string, body []byte, want digest.Digest) {
	t.Helper()
	if got := want.Algorithm().FromBytes(body); got != want {
		t.Errorf("%s: body of %d bytes has digest %s, want %s", what, len(body), got, want)
	}
}
