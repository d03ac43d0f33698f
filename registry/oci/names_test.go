package oci

import (
	"errors"
	"strings"
	"testing"
)

func TestParseName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"alpine", true},
		{"library/alpine", true},
		{"a/b/c/d", true},
		{"my-org/my_app", true},
		{"a__b", true},
		{"a---b", true},
		{"a.b/c.d", true},
		{"0/1", true},
		{"", false},
		{"Alpine", false},
		{"a___b", false},
		{"a..b", false},
		{"-a", false},
		{"a-", false},
		{"/a", false},
		{"a/", false},
		{"a//b", false},
		{"a b", false},
		{"a:b", false},
		{"a@b", false},
		{"../etc", false},
		{strings.Repeat("a", 255), true},
		{strings.Repeat("a", 256), false},
	} {
		_, err := parseName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("parseName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrNameInvalid) {
			t.Errorf("parseName(%q) error %v is not ErrNameInvalid", tc.name, err)
		}
	}
}

func TestParseRegistry(t *testing.T) {
	for _, tc := range []struct {
		ns, def, want string
		ok            bool
	}{
		{"", "docker.io", "docker.io", true},
		{"docker.io", "x.io", "docker.io", true},
		{"ghcr.io", "", "ghcr.io", true},
		{"127.0.0.1:5000", "", "127.0.0.1:5000", true},
		{"localhost:5000", "", "localhost:5000", true},
		{"Registry.Example.COM", "", "Registry.Example.COM", true},
		{"[::1]:5000", "", "[::1]:5000", true},
		{"[::1]", "", "[::1]", true},
		{"", "", "", false},
		{"host:0", "", "", false},
		{"host:65536", "", "", false},
		{"host:", "", "", false},
		{"host:05000", "", "", false},
		{"host:+5", "", "", false},
		{"::1", "", "", false},
		{"[1.2.3.4]:5", "", "", false},
		{"[::1", "", "", false},
		{"[::1]x", "", "", false},
		{"a_b.io", "", "", false},
		{"-a.io", "", "", false},
		{"a..io", "", "", false},
		{"a.io/path", "", "", false},
		{"user@a.io", "", "", false},
		{"a.io:5000:1", "", "", false},
		{"http://a.io", "", "", false},
	} {
		got, err := ParseRegistry(tc.ns, tc.def)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseRegistry(%q, %q) = %q, %v; want %q ok=%v", tc.ns, tc.def, got, err, tc.want, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrRegistryInvalid) {
			t.Errorf("ParseRegistry(%q) error %v is not ErrRegistryInvalid", tc.ns, err)
		}
	}
}

func TestParseRefTotalLength(t *testing.T) {
	name := strings.Repeat("a", 250)
	if _, err := ParseRef("", name, "a.io"); err != nil {
		t.Fatalf("255-byte reference refused: %v", err)
	}
	if _, err := ParseRef("ab.io", name, ""); !errors.Is(err, ErrNameInvalid) {
		t.Fatalf("256-byte reference: got %v, want ErrNameInvalid", err)
	}
	ref, err := ParseRef("", "library/alpine", "docker.io")
	if err != nil || ref != (Ref{Registry: "docker.io", Repository: "library/alpine"}) {
		t.Fatalf("ParseRef default registry = %+v, %v", ref, err)
	}
}

const (
	sha256Hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	sha512Hex = "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
)

func TestParseDigest(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"sha256:" + sha256Hex, true},
		{"sha512:" + sha512Hex, true},
		{"sha384:" + strings.Repeat("a", 96), false},
		{"sha256:" + strings.ToUpper(sha256Hex), false},
		{"sha256:" + sha256Hex[:63], false},
		{"sha256:" + sha256Hex + "0", false},
		{"sha256:", false},
		{"sha256", false},
		{":" + sha256Hex, false},
		{"md5:d41d8cd98f00b204e9800998ecf8427e", false},
		{"SHA256:" + sha256Hex, false},
		{"", false},
	} {
		_, err := ParseDigest(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseDigest(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrDigestInvalid) {
			t.Errorf("ParseDigest(%q) error %v is not ErrDigestInvalid", tc.in, err)
		}
	}
}

func TestParseReference(t *testing.T) {
	for _, tc := range []struct {
		in      string
		tag     string
		digest  bool
		wantErr error
	}{
		{in: "latest", tag: "latest"},
		{in: "3.20", tag: "3.20"},
		{in: "_x", tag: "_x"},
		{in: "V1.0-rc_2", tag: "V1.0-rc_2"},
		{in: strings.Repeat("a", 128), tag: strings.Repeat("a", 128)},
		{in: "sha256:" + sha256Hex, digest: true},
		{in: strings.Repeat("a", 129), wantErr: ErrReferenceInvalid},
		{in: "", wantErr: ErrReferenceInvalid},
		{in: ".x", wantErr: ErrReferenceInvalid},
		{in: "-x", wantErr: ErrReferenceInvalid},
		{in: "a b", wantErr: ErrReferenceInvalid},
		{in: "a/b", wantErr: ErrReferenceInvalid},
		{in: "sha256:xyz", wantErr: ErrDigestInvalid},
		{in: "latest:1", wantErr: ErrDigestInvalid},
	} {
		got, err := ParseReference(tc.in)
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("ParseReference(%q) = %+v, %v; want %v", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got.Tag != tc.tag || (got.Digest != "") != tc.digest {
			t.Errorf("ParseReference(%q) = %+v, %v", tc.in, got, err)
		}
	}
}

func FuzzParseName(f *testing.F) {
	for _, s := range []string{"library/alpine", "a__b/c-d.e", "A", "a//b", "", "a___b", strings.Repeat("ab/", 90)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		valid := validNameFrom(s)
		if got, err := parseName(valid); err != nil || got != valid {
			t.Fatalf("parseName(%q) = %q, %v: refused a name the grammar admits", valid, got, err)
		}
		name, err := parseName(s)
		if err != nil {
			return
		}
		if name != s || len(s) > maxRefLength {
			t.Fatalf("accepted %q as %q", s, name)
		}
		// What the grammar admits is safe in a URL path and an image name.
		for i := 0; i < len(s); i++ {
			c := s[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '/') {
				t.Fatalf("accepted %q with byte %q", s, c)
			}
		}
		if strings.Contains(s, "//") || strings.Contains(s, "..") || strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/") {
			t.Fatalf("accepted %q", s)
		}
	})
}

func FuzzParseReference(f *testing.F) {
	for _, s := range []string{"latest", "sha256:" + sha256Hex, "sha512:" + sha512Hex, "a:b", ".x", "", strings.Repeat("t", 129)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tag := validTagFrom(s)
		if got, err := ParseReference(tag); err != nil || got != (Reference{Tag: tag}) {
			t.Fatalf("ParseReference(%q) = %+v, %v: refused a tag the grammar admits", tag, got, err)
		}
		ref, err := ParseReference(s)
		if err != nil {
			if ref != (Reference{}) {
				t.Fatalf("error %v with a value %+v", err, ref)
			}
			return
		}
		switch {
		case ref.Tag != "" && ref.Digest == "":
			if ref.Tag != s || len(s) > 128 || strings.ContainsAny(s, ":/@ ") {
				t.Fatalf("accepted tag %q from %q", ref.Tag, s)
			}
		case ref.Digest != "" && ref.Tag == "":
			if ref.Digest.String() != s || ref.Digest.Validate() != nil {
				t.Fatalf("accepted digest %q from %q", ref.Digest, s)
			}
		default:
			t.Fatalf("reference %+v from %q is neither tag nor digest", ref, s)
		}
	})
}

// validNameFrom maps any input onto a repository name the distribution
// grammar admits: components of [a-z0-9] joined by the allowed separators
// (".", "_", "__", runs of "-") and "/", at most maxRefLength bytes.
func validNameFrom(s string) string {
	const alnum = "abcdefghijklmnopqrstuvwxyz0123456789"
	seps := []string{".", "_", "__", "-", "---", "/"}
	var b strings.Builder
	b.WriteByte(alnum[len(s)%len(alnum)])
	for i := 0; i < len(s) && b.Len() < maxRefLength-4; i++ {
		c := s[i]
		if c%5 == 0 {
			b.WriteString(seps[int(c/5)%len(seps)])
		}
		b.WriteByte(alnum[int(c)%len(alnum)])
	}
	return b.String()
}

// validTagFrom maps any input onto a tag: [\w][\w.-]{0,127}.
func validTagFrom(s string) string {
	const word = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
	const rest = word + ".-"
	b := []byte{word[len(s)%len(word)]}
	for i := 0; i < len(s) && len(b) < 128; i++ {
		b = append(b, rest[int(s[i])%len(rest)])
	}
	return string(b)
}
