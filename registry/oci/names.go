package oci

import (
	// ParseDigest serves sha256 and sha512 digests: go-digest hashes an
	// algorithm only where its package is linked in.
	_ "crypto/sha256"
	_ "crypto/sha512"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

// The distribution spec's grammar; anchored so a match is the whole input.
var (
	nameGrammar = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagGrammar  = regexp.MustCompile(`^[\w][\w.-]{0,127}$`)
	hostLabel   = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
)

// maxRefLength bounds registry + "/" + repository, as distribution and
// containerd do for a full image name.
const maxRefLength = 255

// Errors for bad input: every parser's error wraps one of them, so a caller
// can tell which part of a request was bad (errors.Is).
var (
	ErrNameInvalid      = errors.New("invalid repository name")
	ErrReferenceInvalid = errors.New("invalid reference")
	ErrDigestInvalid    = errors.New("invalid digest")
	ErrRegistryInvalid  = errors.New("invalid registry host")
)

// parseName checks a repository name against the distribution spec grammar.
func parseName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty", ErrNameInvalid)
	}
	if len(name) > maxRefLength {
		return "", fmt.Errorf("%w: %d bytes, longer than %d", ErrNameInvalid, len(name), maxRefLength)
	}
	if !nameGrammar.MatchString(name) {
		return "", fmt.Errorf("%w: %q does not match the distribution grammar", ErrNameInvalid, name)
	}
	return name, nil
}

// ParseRegistry checks the ns query value: a host (DNS name, IPv4 or
// bracketed IPv6) with an optional port. "" yields def, the default registry.
func ParseRegistry(ns, def string) (string, error) {
	if ns == "" {
		ns = def
	}
	if ns == "" {
		return "", fmt.Errorf("%w: empty and no default registry", ErrRegistryInvalid)
	}
	host, port, hasPort := ns, "", false
	switch {
	case strings.HasPrefix(ns, "["):
		end := strings.Index(ns, "]")
		if end < 0 {
			return "", fmt.Errorf("%w: %q: unclosed bracket", ErrRegistryInvalid, ns)
		}
		host, rest := ns[1:end], ns[end+1:]
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() || a.Zone() != "" {
			return "", fmt.Errorf("%w: %q: brackets need an IPv6 address", ErrRegistryInvalid, ns)
		}
		if rest != "" {
			if !strings.HasPrefix(rest, ":") {
				return "", fmt.Errorf("%w: %q: junk after the address", ErrRegistryInvalid, ns)
			}
			port, hasPort = rest[1:], true
		}
	default:
		if i := strings.IndexByte(ns, ':'); i >= 0 {
			host, port, hasPort = ns[:i], ns[i+1:], true
		}
		if !validHostname(host) {
			return "", fmt.Errorf("%w: %q: bad host name", ErrRegistryInvalid, ns)
		}
	}
	if hasPort {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 || strconv.FormatUint(n, 10) != port {
			return "", fmt.Errorf("%w: %q: port must be 1-65535", ErrRegistryInvalid, ns)
		}
	}
	return ns, nil
}

// validHostname accepts DNS names and IPv4 literals (whose labels are digits).
func validHostname(host string) bool {
	if host == "" || len(host) > 253 {
		return false
	}
	for _, label := range strings.Split(host, ".") {
		if !hostLabel.MatchString(label) {
			return false
		}
	}
	return true
}

// ParseRef validates the ns query and the repository name together.
func ParseRef(ns, name, defaultRegistry string) (Ref, error) {
	reg, err := ParseRegistry(ns, defaultRegistry)
	if err != nil {
		return Ref{}, err
	}
	repo, err := parseName(name)
	if err != nil {
		return Ref{}, err
	}
	ref := Ref{Registry: reg, Repository: repo}
	if n := len(ref.String()); n > maxRefLength {
		return Ref{}, fmt.Errorf("%w: %q is %d bytes, longer than %d", ErrNameInvalid, ref.String(), n, maxRefLength)
	}
	return ref, nil
}

// ParseDigest accepts a canonical sha256 or sha512 digest.
func ParseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%w: %q: %w", ErrDigestInvalid, s, err)
	}
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("%w: %q: %w", ErrDigestInvalid, s, err)
	}
	switch d.Algorithm() {
	case digest.SHA256, digest.SHA512:
		return d, nil
	default:
		return "", fmt.Errorf("%w: %q: algorithm %s is not served", ErrDigestInvalid, s, d.Algorithm())
	}
}

// Reference is a manifest reference: exactly one of Tag and Digest is set.
type Reference struct {
	Tag    string
	Digest digest.Digest
}

// ParseReference reads a manifest reference: a digest when it has a colon
// (tags cannot), a tag otherwise.
func ParseReference(s string) (Reference, error) {
	if strings.Contains(s, ":") {
		d, err := ParseDigest(s)
		if err != nil {
			return Reference{}, err
		}
		return Reference{Digest: d}, nil
	}
	if !tagGrammar.MatchString(s) {
		return Reference{}, fmt.Errorf("%w: tag %q must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", ErrReferenceInvalid, s)
	}
	return Reference{Tag: s}, nil
}
