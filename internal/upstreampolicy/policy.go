// Package upstreampolicy decides which upstream registries the daemon may
// fetch from and which addresses it may dial for them. It owns the
// allow-list (--default-registry, --upstream-plain-http, the registries of
// --registry-config, --allow-registry) and the address policy applied at
// connect time to every dial, redirects included. It never fetches
// anything itself.
package upstreampolicy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
)

// Errors of the policy; both mean "not fetched", so callers answer 404.
var (
	// ErrNotNamed: the operator did not name the registry.
	ErrNotNamed = errors.New("registry not named by the operator (--default-registry, --upstream-plain-http, --registry-config, --allow-registry)")
	// errAddressRefused: the address may not be dialed for this host.
	errAddressRefused = errors.New("address refused")
	// ErrPlainHTTP: plain HTTP to a registry not in --upstream-plain-http.
	ErrPlainHTTP = errors.New("plain HTTP refused: registry not in --upstream-plain-http")
)

// Wildcard as an --allow-registry entry allows any registry on a public
// address.
const Wildcard = "*"

// Config lists what the operator named.
type Config struct {
	// Allow are registries named explicitly (host[:port]): the default
	// registry, the registries with credentials, each --allow-registry.
	// Wildcard allows any registry on a public address.
	Allow []string
	// PlainHTTP are the registries reached over plain HTTP; named too.
	PlainHTTP []string
	// Logger gets one warning per refused dial; default slog.Default().
	Logger *slog.Logger
}

// Policy is immutable once built; safe for concurrent use.
type Policy struct {
	named    map[string]bool // canonical host[:port]
	plain    map[string]bool
	wildcard bool
	log      *slog.Logger
}

// DefaultConfig returns the defaults: nothing named, so nothing is
// fetched until the caller lists registries.
func DefaultConfig() Config { return Config{Logger: slog.Default()} }

// Validate parses every entry; a bad one is an error naming it.
func (c Config) Validate() error {
	_, err := c.parse()
	return err
}

// New builds the policy of cfg (Validate's errors; a nil Logger is
// slog.Default()).
func New(cfg Config) (*Policy, error) {
	p, err := cfg.parse()
	if err != nil {
		return nil, err
	}
	if p.log == nil {
		p.log = DefaultConfig().Logger
	}
	return p, nil
}

// parse checks and canonicalizes every entry.
func (c Config) parse() (*Policy, error) {
	p := &Policy{named: map[string]bool{}, plain: map[string]bool{}, log: c.Logger}
	for _, e := range c.Allow {
		if e == Wildcard {
			p.wildcard = true
			continue
		}
		canon, err := ParseRegistry(e)
		if err != nil {
			return nil, err
		}
		p.named[canon] = true
	}
	for _, e := range c.PlainHTTP {
		canon, err := ParseRegistry(e)
		if err != nil {
			return nil, fmt.Errorf("plain HTTP registry: %w", err)
		}
		p.named[canon] = true
		p.plain[canon] = true
	}
	return p, nil
}

// ParseRegistry checks one entry, host[:port] (IPv6 in brackets), and
// returns its canonical form: lower case, no default port 443, Docker
// Hub's aliases as docker.io.
func ParseRegistry(s string) (string, error) {
	host, port, err := splitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("registry %q: %w", s, err)
	}
	return canonical(host, port), nil
}

func splitHostPort(s string) (host, port string, err error) {
	if s == "" || strings.ContainsAny(s, "/@?#% \t\r\n") {
		return "", "", errors.New("want host[:port], without scheme or path")
	}
	host = s
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", errors.New("unclosed bracket")
		}
		host, port = s[1:end], s[end+1:]
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", "", errors.New("brackets need an IPv6 address")
		}
		if port != "" {
			if port, err = cutPort(port); err != nil {
				return "", "", err
			}
		}
		return a.String(), port, nil
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		if strings.Count(s, ":") > 1 {
			return "", "", errors.New("an IPv6 address needs brackets")
		}
		host = s[:i]
		if port, err = cutPort(s[i:]); err != nil {
			return "", "", err
		}
	}
	if host == "" || len(host) > 253 {
		return "", "", errors.New("empty or too long host")
	}
	for _, label := range strings.Split(host, ".") {
		if !validLabel(label) {
			return "", "", fmt.Errorf("bad host label %q", label)
		}
	}
	return strings.ToLower(host), port, nil
}

func cutPort(s string) (string, error) {
	p, ok := strings.CutPrefix(s, ":")
	n, err := strconv.ParseUint(p, 10, 16)
	if !ok || err != nil || n == 0 || strconv.FormatUint(n, 10) != p {
		return "", fmt.Errorf("port %q must be 1-65535", s)
	}
	return p, nil
}

func validLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for _, c := range []byte(l) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func canonical(host, port string) string {
	switch host {
	case "index.docker.io", "registry-1.docker.io":
		host = "docker.io"
	}
	if port == "443" {
		port = ""
	}
	if port == "" {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return net.JoinHostPort(host, port)
}

// Allows says whether a request's registry (?ns=) may be fetched: named,
// or under the wildcard, unless it is an address literal that may not be
// dialed. Name lookups are left to the dial.
func (p *Policy) Allows(registry string) error {
	host, port, err := splitHostPort(registry)
	if err != nil {
		return fmt.Errorf("registry %q: %w", registry, err)
	}
	if p.named[canonical(host, port)] {
		return nil
	}
	if !p.wildcard {
		return fmt.Errorf("registry %q: %w", registry, ErrNotNamed)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if err := checkAddr(a, false); err != nil {
			return fmt.Errorf("registry %q: %w", registry, err)
		}
	}
	return nil
}

// explicit says whether the dial target host:port (the port always set)
// was named: an entry without a port stands for 443 and 80.
func (p *Policy) explicit(host, port string) bool {
	host = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	if a, err := netip.ParseAddr(host); err == nil {
		host = a.String()
	}
	if p.named[canonical(host, port)] {
		return true
	}
	return (port == "80" || port == "443") && p.named[canonical(host, "")]
}

// PlainHTTP says whether hostport (a URL's host, port optional) may be
// reached over plain HTTP.
func (p *Policy) PlainHTTP(hostport string) bool {
	host, port, err := splitHostPort(hostport)
	if err != nil {
		return false
	}
	return p.plain[canonical(host, port)] || ((port == "" || port == "80") && p.plain[canonical(host, "")])
}

// RefusedError is a dial the policy refused.
type RefusedError struct {
	Host   string // the dial target, host:port
	Addr   netip.Addr
	Reason error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("dial %s (%s) refused: %v", e.Host, e.Addr, e.Reason)
}

func (e *RefusedError) Unwrap() error { return e.Reason }

type registryKey struct{}

// WithRegistry notes in ctx the registry a request is for, so a refused
// dial (of a redirect, say) is logged with it.
func WithRegistry(ctx context.Context, registry string) context.Context {
	return context.WithValue(ctx, registryKey{}, registry)
}

// DialContext wraps d so every connection's resolved address is checked at
// connect time (so a name that resolves, or is rebound, to an internal
// address is refused): internal addresses only for hosts named
// explicitly, metadata and unspecified addresses never.
func (p *Policy) DialContext(d net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		explicit := p.explicit(host, port)
		dd := d
		dd.ControlContext = func(_ context.Context, _, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("dial %s: resolved to %q: %w", addr, address, err)
			}
			if err := checkAddr(ap.Addr(), explicit); err != nil {
				reg, _ := ctx.Value(registryKey{}).(string)
				p.log.Warn("upstream dial refused", "registry", reg, "host", addr, "address", ap.Addr().String(), "reason", err.Error())
				return &RefusedError{Host: addr, Addr: ap.Addr(), Reason: err}
			}
			return nil
		}
		return dd.DialContext(ctx, network, addr)
	}
}

// GuardPlainHTTP refuses, on every request and redirect, plain HTTP to a
// host not in PlainHTTP: go-containerregistry would otherwise try HTTP for
// loopback and RFC 1918 registries on its own.
func (p *Policy) GuardPlainHTTP(next http.RoundTripper) http.RoundTripper {
	return plainHTTPGuard{next: next, p: p}
}

type plainHTTPGuard struct {
	next http.RoundTripper
	p    *Policy
}

func (g plainHTTPGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" && !g.p.PlainHTTP(req.URL.Host) {
		if req.Body != nil {
			req.Body.Close()
		}
		reg, _ := req.Context().Value(registryKey{}).(string)
		g.p.log.Warn("upstream request refused", "registry", reg, "url", req.URL.Redacted(), "reason", ErrPlainHTTP.Error())
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Redacted(), ErrPlainHTTP)
	}
	return g.next.RoundTrip(req)
}
