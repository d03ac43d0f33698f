package oci

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/opencontainers/go-digest"
)

func newVerifying(body []byte, want digest.Digest, size, offset int64) io.ReadCloser {
	return NewVerifyingReader(io.NopCloser(bytes.NewReader(body)), "test", want, size, offset)
}

func TestVerifyingReader(t *testing.T) {
	data := randomBytes(9<<20+3, 5)
	good := digest.FromBytes(data)
	bad := append([]byte(nil), data...)
	bad[len(bad)-1] ^= 1
	for _, tc := range []struct {
		name      string
		body      []byte
		offset    int64
		wantErr   error
		wantZeros int // Reads that only skipped
	}{
		{"whole", data, 0, nil, 0},
		{"from 8.5 MiB", data, 17 << 19, nil, 2},
		{"from the end", data, int64(len(data)), nil, 2},
		{"wrong last byte", bad, 0, ErrDigestMismatch, 0},
		{"wrong last byte, from the middle", bad, 4 << 20, ErrDigestMismatch, 1},
		{"short", data[:len(data)-1], 0, io.ErrUnexpectedEOF, 0},
		{"short while skipping", data[:1<<20], 2 << 20, io.ErrUnexpectedEOF, 0},
		{"long (extra bytes are not the blob)", append(append([]byte(nil), data...), 'x'), 0, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVerifying(tc.body, good, int64(len(data)), tc.offset)
			var got []byte
			zeros := 0
			buf := make([]byte, 1<<20)
			var err error
			for i := 0; i < 1000; i++ {
				var n int
				n, err = v.Read(buf)
				got = append(got, buf[:n]...)
				if n == 0 && err == nil {
					zeros++
				}
				if err != nil {
					break
				}
			}
			if tc.wantErr == nil {
				if err != io.EOF || !bytes.Equal(got, data[tc.offset:]) {
					t.Fatalf("got %d bytes, %v", len(got), err)
				}
			} else {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error %v, want %v", err, tc.wantErr)
				}
				if int64(len(got)) >= int64(len(data))-tc.offset {
					t.Fatalf("all %d bytes were handed out before the error", len(got))
				}
			}
			if zeros != tc.wantZeros {
				t.Errorf("%d skip-only reads, want %d", zeros, tc.wantZeros)
			}
		})
	}
}

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n:n]
}

// A resumed reader checks the digest over the bytes hashed before it and
// its own body, and holds back the blob's end when either was wrong.
func TestResumedVerifyingReader(t *testing.T) {
	data := randomBytes(3<<20+7, 6)
	want := digest.FromBytes(data)
	const pos = 1<<20 + 5
	for _, tc := range []struct {
		name         string
		prefix, rest []byte
		ok           bool
	}{
		{"both right", data[:pos], data[pos:], true},
		{"prefix wrong", append([]byte{data[0] ^ 1}, data[1:pos]...), data[pos:], false},
		{"rest wrong", data[:pos], append(append([]byte(nil), data[pos:len(data)-1]...), data[len(data)-1]^1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := want.Algorithm().Hash()
			h.Write(tc.prefix)
			r := NewResumedVerifyingReader(io.NopCloser(bytes.NewReader(tc.rest)), "test", want, int64(len(data)), pos, h)
			got, err := io.ReadAll(r)
			if tc.ok {
				if err != nil || !bytes.Equal(got, data[pos:]) {
					t.Fatalf("read %d bytes, %v; want the rest of the blob", len(got), err)
				}
				return
			}
			if !errors.Is(err, ErrDigestMismatch) || int64(len(got)) >= int64(len(data)-pos) {
				t.Fatalf("read %d of %d bytes, %v; want the end held back and a digest mismatch", len(got), len(data)-pos, err)
			}
		})
	}
}
