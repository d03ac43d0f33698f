package upstream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/registry/oci"
)

// OpenFrom asks the upstream with Range and trusts a 206 only when its
// Content-Range is exactly the range asked; a 200 is the whole blob.
func TestUpstreamBlobOpenFrom(t *testing.T) {
	blob := randomBytes(300<<10, 17)
	dgst := digest.FromBytes(blob)
	size := int64(len(blob))
	const from = 100 << 10
	for _, tc := range []struct {
		name      string
		status    int
		cr        string // Content-Range of a 206
		body      []byte
		wantStart int64
		wantErr   error
	}{
		{"206 with the right Content-Range", http.StatusPartialContent, fmt.Sprintf("bytes %d-%d/%d", from, size-1, size), blob[from:], from, nil},
		{"200 ignoring the Range", http.StatusOK, "", blob, 0, nil},
		{"206 from another offset", http.StatusPartialContent, fmt.Sprintf("bytes %d-%d/%d", from-1, size-1, size), blob[from-1:], 0, oci.ErrBadContentRange},
		{"206 of another size", http.StatusPartialContent, fmt.Sprintf("bytes %d-%d/%d", from, size-1, size+1), blob[from:], 0, oci.ErrBadContentRange},
		{"206 with no Content-Range", http.StatusPartialContent, "", blob[from:], 0, oci.ErrBadContentRange},
		{"206 cut to a shorter range", http.StatusPartialContent, fmt.Sprintf("bytes %d-%d/%d", from, size-2, size), blob[from : size-1], 0, oci.ErrBadContentRange},
		{"404", http.StatusNotFound, "", nil, 0, oci.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var ranges []string
			host, _ := scripted(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodHead {
					w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
					return
				}
				mu.Lock()
				ranges = append(ranges, r.Header.Get("Range"))
				mu.Unlock()
				if tc.cr != "" {
					w.Header().Set("Content-Range", tc.cr)
				}
				w.Header().Set("Content-Length", strconv.Itoa(len(tc.body)))
				w.WriteHeader(tc.status)
				_, _ = w.Write(tc.body)
			})
			u := newTestUpstream(t, Config{PlainHTTP: []string{host}})
			ctx := testCtx(t)
			b, err := u.Blob(ctx, oci.Ref{Registry: host, Repository: "x/y"}, dgst)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			rb, ok := b.(oci.ResumableBlob)
			if !ok {
				t.Fatalf("the upstream's blob %T is not resumable", b)
			}
			body, start, err := rb.OpenFrom(ctx, from)
			mu.Lock()
			if len(ranges) != 1 || ranges[0] != fmt.Sprintf("bytes=%d-", from) {
				t.Errorf("Range headers sent: %q", ranges)
			}
			mu.Unlock()
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("OpenFrom: start %d, err %v; want %v", start, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer body.Close()
			got, err := io.ReadAll(body)
			if err != nil || start != tc.wantStart || !bytes.Equal(got, blob[start:]) {
				t.Fatalf("OpenFrom: start %d (want %d), %d bytes, %v", start, tc.wantStart, len(got), err)
			}
		})
	}
}
