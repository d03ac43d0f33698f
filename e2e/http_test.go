package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/internal/peerauth"
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

// do sends one request with headers given as "Key: value" pairs and fails
// the test when no answer comes.
func do(t testing.TB, method, url string, headers ...string) reply {
	t.Helper()
	r, err := send(method, url, headers...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// getURL GETs url and reads the whole answer, within requestTimeout.
func getURL(url string, headers ...string) (reply, error) {
	return send(http.MethodGet, url, headers...)
}

// send is the one way an e2e test talks HTTP: one request, its body read,
// all within requestTimeout (a hung daemon fails the test, it never hangs it).
func send(method, url string, headers ...string) (reply, error) {
	return sendWith(nil, method, url, headers...)
}

// sendWith is send, signed with key (nil: unsigned).
func sendWith(key *testenv.ClusterKey, method, url string, headers ...string) (reply, error) {
	resp, cancel, err := openWith(key, method, url, headers...)
	if err != nil {
		return reply{}, err
	}
	defer cancel()
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, fmt.Errorf("%s %s: read body: %w", method, url, err)
	}
	return reply{Status: resp.StatusCode, Header: resp.Header, Body: body}, nil
}

// open sends one request and returns the response for the caller to
// stream; the whole exchange, body included, ends by requestTimeout, and
// cancel (to call once done) frees it.
func open(method, url string, headers ...string) (*http.Response, context.CancelFunc, error) {
	return openWith(nil, method, url, headers...)
}

// openWith is open, signed with key (nil: unsigned).
func openWith(key *testenv.ClusterKey, method, url string, headers ...string) (*http.Response, context.CancelFunc, error) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	for _, h := range headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			cancel()
			return nil, nil, fmt.Errorf("header %q: want \"Key: value\"", h)
		}
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	// Redirects are answers too: a mirror must not turn a bad name into a good one.
	client := key.Client(requestTimeout)
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	return resp, cancel, nil
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

// memberGet GETs a member-only path (/peer/v1/…, /admin/v1/…) of n from
// the test's address as a member would, signed with n's cluster key, and
// fails the test when no answer comes. Every e2e request to a member-only
// path goes through memberGet, adminGet or peerGet.
func memberGet(t testing.TB, n *testenv.Node, path string, headers ...string) reply {
	t.Helper()
	r, err := sendWith(n.Key, http.MethodGet, n.URL()+path, headers...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// adminGet GETs path (/admin/v1/...) from n as memberGet does and decodes
// its JSON answer into out; for goroutines, it returns the error.
func adminGet(n *testenv.Node, path string, out any) error {
	r, err := sendWith(n.Key, http.MethodGet, n.URL()+path)
	if err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	if r.Status != http.StatusOK {
		return fmt.Errorf("%s: GET %s: %d %.200s", n.Name, path, r.Status, r.Body)
	}
	if err := json.Unmarshal(r.Body, out); err != nil {
		return fmt.Errorf("%s: GET %s: %w", n.Name, path, err)
	}
	return nil
}

// peerGet GETs path (/peer/v1/...) from n's peer endpoint as member `as`
// would: from its address, signed with its key, with the no-forward
// header. The caller reads
// and closes the body, then calls cancel; the exchange ends by
// requestTimeout. Every e2e peer request goes through here.
func peerGet(as, n *testenv.Node, path string, headers ...string) (*http.Response, context.CancelFunc, error) {
	dialer := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(as.IP)}}
	var transport http.RoundTripper = &http.Transport{DialContext: dialer.DialContext, DisableKeepAlives: true}
	if as.Key != nil {
		transport = &peerauth.Transport{Base: transport, Keys: as.Key.Keys, Node: as.Name}
	}
	client := &http.Client{Timeout: requestTimeout, Transport: transport}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL()+path, nil)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	req.Header.Set("X-Dregistry-No-Forward", "1")
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("%s as %s: GET %s: %w", n.Name, as.Name, path, err)
	}
	return resp, cancel, nil
}
