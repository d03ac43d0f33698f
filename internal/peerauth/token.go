package peerauth

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header carries a member's request token.
//
// Token format: "v1:" base64url(node) ":" unix-seconds ":" base64url(mac),
// with mac = HMAC-SHA256(httpKey, "v1\n" node "\n" seconds "\n" method "\n"
// host "\n" request-URI). It is valid within maxSkew of the receiver's clock
// either way, for that method, host and URI only.
const Header = "X-Dregistry-Peer-Token"

// maxSkew bounds a token's age and its lead over the receiver's clock:
// members' clocks are NTP-synchronised, and a captured token is replayable
// only this long, for the same request.
const maxSkew = 60 * time.Second

// Limits of a well-formed token.
const (
	maxNodeLen  = 253
	maxTokenLen = 512 // "v1:" + 338 (node) + ":" + 19 + ":" + 43 fits
	macLen      = 32
)

// b64 is the token's encoding; strict, so no unused trailing bits.
var b64 = base64.RawURLEncoding.Strict()

// decodeField decodes one base64url field of a token and refuses any other
// spelling than the canonical one: the decoder skips '\r' and '\n', so
// without the re-encoding check one MAC would verify under many spellings.
func decodeField(s string) ([]byte, error) {
	b, err := b64.DecodeString(s)
	if err != nil {
		return nil, err
	}
	if b64.EncodeToString(b) != s {
		return nil, errors.New("not the canonical base64url spelling")
	}
	return b, nil
}

// parsedToken is a parsed, not yet verified request token.
type parsedToken struct {
	Node string
	At   time.Time
	mac  []byte
}

// parseToken parses the Header value. It checks the form only.
func parseToken(s string) (parsedToken, error) {
	if len(s) > maxTokenLen {
		return parsedToken{}, fmt.Errorf("token longer than %d bytes", maxTokenLen)
	}
	rest, ok := strings.CutPrefix(s, "v1:")
	if !ok {
		return parsedToken{}, errors.New("token does not start with v1:")
	}
	parts := strings.Split(rest, ":")
	if len(parts) != 3 {
		return parsedToken{}, errors.New("token is not v1:node:seconds:mac")
	}
	node, err := decodeField(parts[0])
	if err != nil || len(node) == 0 || len(node) > maxNodeLen {
		return parsedToken{}, fmt.Errorf("token node: not 1 to %d bytes of unpadded base64url", maxNodeLen)
	}
	if parts[1] == "" || len(parts[1]) > 19 || strings.TrimLeft(parts[1], "0123456789") != "" ||
		len(parts[1]) > 1 && parts[1][0] == '0' {
		return parsedToken{}, errors.New("token time: not decimal unix seconds without leading zeros")
	}
	secs, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return parsedToken{}, fmt.Errorf("token time: %w", err)
	}
	mac, err := decodeField(parts[2])
	if err != nil || len(mac) != macLen {
		return parsedToken{}, fmt.Errorf("token mac: not %d bytes of unpadded base64url", macLen)
	}
	return parsedToken{Node: string(node), At: time.Unix(secs, 0), mac: mac}, nil
}

func tokenMsg(node string, secs int64, method, host, uri string) []byte {
	return []byte("v1\n" + node + "\n" + strconv.FormatInt(secs, 10) + "\n" + method + "\n" + host + "\n" + uri)
}

// Sign returns the token for one request of node at now.
func (k *Keys) Sign(node, method, host, uri string, now time.Time) string {
	secs := now.Unix()
	mac := sum(k.http[0], tokenMsg(node, secs, method, host, uri))
	return "v1:" + b64.EncodeToString([]byte(node)) + ":" +
		strconv.FormatInt(secs, 10) + ":" + b64.EncodeToString(mac)
}

// verify checks a token for one request and returns the member it names.
func (k *Keys) verify(token, method, host, uri string, now time.Time) (string, error) {
	t, err := parseToken(token)
	if err != nil {
		return "", err
	}
	if d := now.Sub(t.At); d > maxSkew || d < -maxSkew {
		return "", fmt.Errorf("token of %q is %s off this node's clock (at most %s)", t.Node, d.Round(time.Second), maxSkew)
	}
	if !anyKey(k.http, t.mac, tokenMsg(t.Node, t.At.Unix(), method, host, uri)) {
		return "", fmt.Errorf("token of %q: not signed with this cluster's key", t.Node)
	}
	return t.Node, nil
}

// verifyRequest checks r's token.
func (k *Keys) verifyRequest(r *http.Request, now time.Time) (string, error) {
	tok := r.Header.Get(Header)
	if tok == "" {
		return "", errors.New("no " + Header + " header (members sign their requests with the cluster key)")
	}
	return k.verify(tok, r.Method, r.Host, r.RequestURI, now)
}

// Transport signs every request it sends as node.
type Transport struct {
	Base http.RoundTripper // default http.DefaultTransport
	Keys *Keys
	Node string
	Now  func() time.Time // default time.Now
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	now := time.Now
	if t.Now != nil {
		now = t.Now
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	signed := req.Clone(req.Context())
	signed.Header.Set(Header, t.Keys.Sign(t.Node, req.Method, host, req.URL.RequestURI(), now()))
	return base.RoundTrip(signed)
}
