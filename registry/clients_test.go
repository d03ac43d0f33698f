package registry

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/upstreampolicy"
	"github.com/dregistry/dregistry/registry/oci"
)

func TestParseMirrorAllow(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // "" = refused
	}{
		{"10.0.0.0/8", "10.0.0.0/8"},
		{"10.1.2.3/8", "10.0.0.0/8"},
		{"192.0.2.7/32", "192.0.2.7/32"},
		{"fd00::/8", "fd00::/8"},
		{"0.0.0.0/0", "0.0.0.0/0"},
		{"10.0.0.1", ""},
		{"10.0.0.0/33", ""},
		{"fe80::1%eth0/64", ""},
		{"", ""},
		{"ten/8", ""},
	} {
		got, err := ParseMirrorAllow([]string{tc.in})
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("%q accepted as %v", tc.in, got)
		case tc.want != "" && (err != nil || got[0].String() != tc.want):
			t.Errorf("%q = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

// fakeHost is a host whose address list the test changes; reads counts the
// times it was read.
type fakeHost struct {
	addrs atomic.Pointer[[]netip.Addr]
	reads atomic.Int64
	now   atomic.Int64 // unix nanos of the fake clock
}

func (f *fakeHost) set(addrs ...string) {
	list := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		list[i] = netip.MustParseAddr(a)
	}
	f.addrs.Store(&list)
}

func (f *fakeHost) clients(allow ...string) *Clients {
	prefixes, err := ParseMirrorAllow(allow)
	if err != nil {
		panic(err)
	}
	return NewClients(ClientsConfig{
		Allow: prefixes,
		HostAddrs: func() ([]netip.Addr, error) {
			f.reads.Add(1)
			return *f.addrs.Load(), nil
		},
		Now: func() time.Time { return time.Unix(0, f.now.Load()) },
	})
}

func (f *fakeHost) advance(d time.Duration) { f.now.Add(int64(d)) }

func TestClientsAdmitThisHostAndNamedNetworksOnly(t *testing.T) {
	host := &fakeHost{}
	host.set("192.0.2.10", "2001:db8::10", "fe80::1")
	c := host.clients("10.20.0.0/16", "fd00:1::/32")
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1", true},
		{"127.3.4.5", true},
		{"::1", true},
		{"::ffff:127.0.0.1", true},
		{"192.0.2.10", true},
		{"::ffff:192.0.2.10", true},
		{"2001:db8::10", true},
		{"fe80::1%eth0", true},
		{"10.20.3.4", true},
		{"fd00:1::5", true},
		{"192.0.2.11", false},
		{"10.21.0.1", false},
		{"198.18.0.2", false},
		{"2001:db8::11", false},
		{"0.0.0.0", false},
	} {
		if got := c.Admits(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("Admits(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
	if c.Admits(netip.Addr{}) {
		t.Error("the zero address was admitted")
	}
}

func TestClientsFollowTheHostsAddressesWithoutReadingThemPerRequest(t *testing.T) {
	host := &fakeHost{}
	host.set("192.0.2.10")
	c := host.clients()
	stranger := netip.MustParseAddr("192.0.2.99")
	for range 1000 {
		if c.Admits(stranger) {
			t.Fatal("a stranger was admitted")
		}
		if !c.Admits(netip.MustParseAddr("192.0.2.10")) {
			t.Fatal("the host's address was refused")
		}
	}
	if n := host.reads.Load(); n != 1 {
		t.Fatalf("the address list was read %d times for 2000 requests in one instant, want 1", n)
	}
	// The host gains the address: admitted once the miss interval passed.
	host.set("192.0.2.10", "192.0.2.99")
	host.advance(DefaultClientsConfig().AddrsMissRefresh)
	if !c.Admits(stranger) {
		t.Fatal("a new address of the host was refused")
	}
	// And loses it: refused once the list is older than its max age.
	host.set("192.0.2.10")
	host.advance(DefaultClientsConfig().AddrsMaxAge)
	if c.Admits(stranger) {
		t.Fatal("an address the host lost is still admitted")
	}
	if n := host.reads.Load(); n != 3 {
		t.Fatalf("%d reads, want 3", n)
	}
}

type onlyRegistry string

func (o onlyRegistry) Allows(reg string) error {
	if reg == string(o) {
		return nil
	}
	return upstreampolicy.ErrNotNamed
}

func TestHandlerDeniesClientsNotOfThisHost(t *testing.T) {
	host := &fakeHost{}
	host.set("192.0.2.10")
	src := newFakeSource("fake")
	ref := oci.Ref{Registry: "docker.io", Repository: "library/app"}
	dgst := src.addBlob(ref, []byte("private layer"))
	desc := src.addManifest(ref, "application/vnd.oci.image.manifest.v1+json", []byte(`{"schemaVersion":2}`))
	src.tags[ref.String()+":v1"] = desc
	h := NewHandler(Config{Sources: []oci.Source{src}, TagSources: []oci.Source{src}, Clients: host.clients("10.0.0.0/8"),
		Registries: onlyRegistry("docker.io"), Logger: testLogger(t)})

	paths := []string{
		"/v2/",
		"/v2/library/app/blobs/" + dgst.String(),
		"/v2/library/app/manifests/v1",
		"/v2/library/app/manifests/" + desc.Digest.String(),
		"/v2/library/app/tags/list",
	}
	for _, tc := range []struct {
		remote string
		denied bool
	}{
		{"127.0.0.1:4000", false},
		{"[::1]:4000", false},
		{"192.0.2.10:4000", false},
		{"10.9.9.9:4000", false},
		{"192.0.2.11:4000", true},
		{"198.18.0.2:4000", true},
		{"[2001:db8::1]:4000", true},
		{"not-an-address", true},
	} {
		for _, path := range paths {
			for _, method := range []string{http.MethodGet, http.MethodHead, http.MethodPost} {
				req := httptest.NewRequest(method, path, nil)
				req.RemoteAddr = tc.remote
				req.Header.Set("Authorization", "Basic dXNlcjpzZWNyZXQ=")
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code == http.StatusUnauthorized {
					t.Fatalf("%s %s from %s: 401", method, path, tc.remote)
				}
				if !tc.denied {
					if rec.Code == http.StatusForbidden {
						t.Errorf("%s %s from %s: 403", method, path, tc.remote)
					}
					continue
				}
				if rec.Code != http.StatusForbidden {
					t.Errorf("%s %s from %s: %d, want 403", method, path, tc.remote, rec.Code)
					continue
				}
				if method == http.MethodHead {
					continue
				}
				var body ociErrors
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || len(body.Errors) != 1 || body.Errors[0].Code != "DENIED" {
					t.Errorf("%s %s from %s: body %q, want OCI DENIED", method, path, tc.remote, rec.Body.Bytes())
				}
			}
		}
	}
}

func TestHandlerServesOnlyRegistriesItFetches(t *testing.T) {
	src := newFakeSource("fake")
	named := oci.Ref{Registry: "docker.io", Repository: "library/app"}
	other := oci.Ref{Registry: "10.0.0.5:5000", Repository: "library/app"}
	dgst := src.addBlob(named, []byte("layer"))
	src.addBlob(other, []byte("layer"))
	h := NewHandler(Config{Sources: []oci.Source{src}, TagSources: []oci.Source{src}, Registries: onlyRegistry("docker.io"), Logger: testLogger(t)})
	for _, tc := range []struct {
		url  string
		want int
	}{
		{"/v2/library/app/blobs/" + dgst.String(), http.StatusOK},
		{"/v2/library/app/blobs/" + dgst.String() + "?ns=docker.io", http.StatusOK},
		{"/v2/library/app/blobs/" + dgst.String() + "?ns=10.0.0.5:5000", http.StatusNotFound},
		{"/v2/library/app/manifests/v1?ns=169.254.169.254", http.StatusNotFound},
		{"/v2/library/app/manifests/" + dgst.String() + "?ns=evil.example", http.StatusNotFound},
	} {
		before := src.blobCalls.Load() + src.manifestCalls.Load()
		req := httptest.NewRequest(http.MethodGet, tc.url, nil)
		req.RemoteAddr = "127.0.0.1:1"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("GET %s: %d, want %d", tc.url, rec.Code, tc.want)
		}
		if tc.want == http.StatusNotFound && src.blobCalls.Load()+src.manifestCalls.Load() != before {
			t.Errorf("GET %s: a source was asked about an unnamed registry", tc.url)
		}
	}
	if !errors.Is(onlyRegistry("x").Allows("y"), upstreampolicy.ErrNotNamed) {
		t.Fatal("test policy broken")
	}
}
