package registry

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/registry/oci"
)

// Digests of empty content, valid in form.
const (
	sha256Hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	sha512Hex = "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
)

// FuzzParseDigest feeds arbitrary strings to ParseDigest and, as the
// <digest> of GET /v2/<name>/blobs/<digest>, to the handler. Properties: a
// rejection is an errDigestInvalid with no value and the handler answers 400
// DIGEST_INVALID without asking a source; an accepted digest is canonical
// (the input itself, lowercase hex of its algorithm's length) and the
// handler serves the blob stored under it, or 404, never other bytes. The
// seed corpus is in testdata/fuzz/FuzzParseDigest.
func FuzzParseDigest(f *testing.F) {
	blob := []byte("the one blob the fuzzed handler holds")
	for _, s := range []string{
		"sha256:" + sha256Hex, "sha512:" + sha512Hex, digest.FromBytes(blob).String(),
		"sha256:" + strings.ToUpper(sha256Hex), "sha256:" + sha256Hex[1:], "sha256:" + sha256Hex + "0",
		"sha384:" + strings.Repeat("a", 96), "md5:d41d8cd98f00b204e9800998ecf8427e", "sha256+b64:abc",
		"sha256:", ":" + sha256Hex, "sha256" + sha256Hex, "latest", "", "sha256:%2e%2e", "SHA256:" + sha256Hex,
	} {
		f.Add(s)
	}
	src := newFakeSource("containerd")
	ref := oci.Ref{Registry: "docker.io", Repository: "library/fuzz"}
	stored := src.addBlob(ref, blob)
	h := NewHandler(Config{
		Sources:       []oci.Source{src},
		TagSources:    []oci.Source{src},
		LookupTimeout: 5 * time.Second,
		StallTimeout:  5 * time.Second,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	})

	f.Fuzz(func(t *testing.T, s string) {
		d, err := oci.ParseDigest(s)
		if err != nil {
			if d != "" || !errors.Is(err, oci.ErrDigestInvalid) {
				t.Fatalf("ParseDigest(%q) = %q, %v: a rejection must be an errDigestInvalid without a value", s, d, err)
			}
		} else {
			checkCanonicalDigest(t, s, d)
		}

		// The path segment carries any byte but '/' (which would change the
		// route); the handler must agree with ParseDigest about the rest.
		if strings.Contains(s, "/") {
			return
		}
		req := httptest.NewRequest(http.MethodGet, "/v2/", nil)
		req.URL.Path = "/v2/library/fuzz/blobs/" + s
		req.URL.RawPath = ""
		calls := src.blobCalls.Load()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch {
		case err != nil:
			if rec.Code != http.StatusBadRequest || !bytes.Contains(rec.Body.Bytes(), []byte(codeDigestInvalid)) {
				t.Fatalf("GET blob %q: status %d %s, want 400 %s", s, rec.Code, rec.Body, codeDigestInvalid)
			}
			if src.blobCalls.Load() != calls {
				t.Fatalf("GET blob %q: a rejected digest reached the source", s)
			}
		case d == stored:
			if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), blob) {
				t.Fatalf("GET blob %q: status %d, body %q, want the stored blob", s, rec.Code, rec.Body)
			}
		default:
			if rec.Code != http.StatusNotFound || !bytes.Contains(rec.Body.Bytes(), []byte(codeBlobUnknown)) {
				t.Fatalf("GET blob %q: status %d %s, want 404 %s", s, rec.Code, rec.Body, codeBlobUnknown)
			}
		}
	})
}

// checkCanonicalDigest asserts an accepted digest is exactly its input, of
// a served algorithm, with lowercase hex of the algorithm's length, and that
// a manifest reference of it parses to the same digest.
func checkCanonicalDigest(t *testing.T, s string, d digest.Digest) {
	t.Helper()
	if d.String() != s {
		t.Fatalf("ParseDigest(%q) = %q: not the input", s, d)
	}
	alg, hex, ok := strings.Cut(s, ":")
	want := map[string]int{"sha256": 64, "sha512": 128}[alg]
	if !ok || want == 0 || len(hex) != want {
		t.Fatalf("ParseDigest accepted %q: algorithm %q with %d hex digits", s, alg, len(hex))
	}
	for i := 0; i < len(hex); i++ {
		if c := hex[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			t.Fatalf("ParseDigest accepted %q with byte %q", s, c)
		}
	}
	if r, err := oci.ParseReference(s); err != nil || r.Digest != d || r.Tag != "" {
		t.Fatalf("ParseReference(%q) = %+v, %v; ParseDigest accepted it", s, r, err)
	}
}
