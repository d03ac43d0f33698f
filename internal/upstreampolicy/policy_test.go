package upstreampolicy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestCheckAddr(t *testing.T) {
	for _, tc := range []struct {
		addr            string
		plain, explicit bool // allowed for an unnamed / a named host
	}{
		{"93.184.216.34", true, true},
		{"2606:4700::1111", true, true},
		{"127.0.0.1", false, true},
		{"127.8.9.10", false, true},
		{"::1", false, true},
		{"::ffff:127.0.0.1", false, true},
		{"10.1.2.3", false, true},
		{"172.16.0.1", false, true},
		{"172.31.255.255", false, true},
		{"172.32.0.1", true, true},
		{"192.168.1.1", false, true},
		{"100.64.0.1", false, true},
		{"100.127.255.254", false, true},
		{"169.254.1.1", false, true},
		{"fe80::1", false, true},
		{"fd12:3456::1", false, true},
		{"198.18.0.1", false, true},
		{"64:ff9b::a00:1", false, true},    // NAT64 of 10.0.0.1
		{"2002:a00:1::1", false, true},     // 6to4 of 10.0.0.1
		{"64:ff9b::5db8:d822", true, true}, // NAT64 of a public address
		// Never, named or not.
		{"169.254.169.254", false, false},
		{"::ffff:169.254.169.254", false, false},
		{"64:ff9b::a9fe:a9fe", false, false}, // NAT64 of 169.254.169.254
		{"169.254.170.2", false, false},
		{"fd00:ec2::254", false, false},
		{"100.100.100.200", false, false},
		{"0.0.0.0", false, false},
		{"::", false, false},
		{"224.0.0.1", false, false},
		{"255.255.255.255", false, false},
		{"ff02::1", false, false},
	} {
		a := netip.MustParseAddr(tc.addr)
		if err := checkAddr(a, false); (err == nil) != tc.plain || (err != nil && !errors.Is(err, errAddressRefused)) {
			t.Errorf("checkAddr(%s, unnamed) = %v, want allowed=%v", tc.addr, err, tc.plain)
		}
		if err := checkAddr(a, true); (err == nil) != tc.explicit {
			t.Errorf("checkAddr(%s, named) = %v, want allowed=%v", tc.addr, err, tc.explicit)
		}
	}
}

func TestNewRefusesBadEntries(t *testing.T) {
	for _, bad := range []string{"", "http://x", "x/y", "x:0", "x:65536", "x:", "::1", "[::1", "[10.0.0.1]", "a..b", "-a.b", "user@x", "x y"} {
		if _, err := New(Config{Allow: []string{bad}}); err == nil {
			t.Errorf("--allow-registry %q accepted", bad)
		}
		if _, err := New(Config{PlainHTTP: []string{bad}}); err == nil {
			t.Errorf("--upstream-plain-http %q accepted", bad)
		}
	}
}

func TestAllows(t *testing.T) {
	named, err := New(Config{Allow: []string{"docker.io", "Ghcr.IO", "reg.example:5000", "[fd00::5]:5000"}, PlainHTTP: []string{"127.0.0.1:5001"}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	any, err := New(Config{Allow: []string{"*"}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ns          string
		named, wild bool
	}{
		{"docker.io", true, true},
		{"index.docker.io", true, true},
		{"registry-1.docker.io:443", true, true},
		{"ghcr.io", true, true},
		{"GHCR.io:443", true, true},
		{"reg.example:5000", true, true},
		{"reg.example", false, true},
		{"reg.example:5001", false, true},
		{"[fd00::5]:5000", true, false},
		{"127.0.0.1:5001", true, false},
		{"127.0.0.1:5002", false, false},
		{"10.0.0.1", false, false},
		{"169.254.169.254", false, false},
		{"quay.io", false, true},
		{"bad_host!", false, false},
	} {
		if err := named.Allows(tc.ns); (err == nil) != tc.named {
			t.Errorf("named policy: Allows(%q) = %v, want allowed=%v", tc.ns, err, tc.named)
		}
		if err := any.Allows(tc.ns); (err == nil) != tc.wild {
			t.Errorf("wildcard policy: Allows(%q) = %v, want allowed=%v", tc.ns, err, tc.wild)
		}
	}
	if err := named.Allows("quay.io"); !errors.Is(err, ErrNotNamed) {
		t.Errorf("Allows(quay.io) = %v, want ErrNotNamed", err)
	}
}

func TestPlainHTTPOnlyForNamedRegistries(t *testing.T) {
	p, err := New(Config{Allow: []string{"10.0.0.5:5000", "localhost:5000"}, PlainHTTP: []string{"127.0.0.1:5001", "reg.lan"}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{
		"127.0.0.1:5001": true, "reg.lan": true, "reg.lan:80": true, "reg.lan:8080": false,
		"10.0.0.5:5000": false, "localhost:5000": false, "127.0.0.1:5000": false, "192.168.1.1": false,
	} {
		if got := p.PlainHTTP(host); got != want {
			t.Errorf("PlainHTTP(%q) = %v, want %v", host, got, want)
		}
	}
}

// TestDialChecksTheResolvedAddress dials names and literals on loopback:
// only a host named explicitly reaches the listener, and a name is judged
// by the address it resolves to at connect time.
func TestDialChecksTheResolvedAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	lit := ln.Addr().String()
	name := net.JoinHostPort("localhost", strings.Split(lit, ":")[1])
	for _, tc := range []struct {
		desc  string
		named []string
		dial  string
		ok    bool
	}{
		{"literal, named", []string{lit}, lit, true},
		{"literal, not named", []string{"127.0.0.1:1"}, lit, false},
		{"literal under the wildcard", []string{"*"}, lit, false},
		{"name resolving to loopback, not named", []string{"*", lit}, name, false},
		{"name resolving to loopback, named", []string{name}, name, true},
		{"name named without its port", []string{"localhost"}, name, false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			p, err := New(Config{Allow: tc.named, Logger: quiet()})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn, err := p.DialContext(net.Dialer{Timeout: 5 * time.Second})(ctx, "tcp4", tc.dial)
			if conn != nil {
				conn.Close()
			}
			if (err == nil) != tc.ok {
				t.Fatalf("dial %s (port %d): %v, want ok=%v", tc.dial, port, err, tc.ok)
			}
			var refused *RefusedError
			if err != nil && (!errors.As(err, &refused) || !errors.Is(err, errAddressRefused)) {
				t.Fatalf("dial error %v is not a RefusedError", err)
			}
		})
	}
}
