package registry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/registry/oci"
)

// movingSource serves fakeSource's blobs as oci.Progressing streams, as the
// egress serves a download it follows in the swarm: no byte comes until
// release is closed, while Progress says what the test makes of progress.
type movingSource struct {
	*fakeSource
	progress atomic.Int64
	release  chan struct{}
}

func newMovingSource(name string) *movingSource {
	return &movingSource{fakeSource: newFakeSource(name), release: make(chan struct{})}
}

func (s *movingSource) Blob(ctx context.Context, ref oci.Ref, dgst digest.Digest) (oci.Blob, error) {
	b, err := s.fakeSource.Blob(ctx, ref, dgst)
	if err != nil {
		return nil, err
	}
	return &movingBlob{Blob: b, src: s}, nil
}

type movingBlob struct {
	oci.Blob
	src *movingSource
}

func (b *movingBlob) Open(ctx context.Context, offset int64) (io.ReadCloser, error) {
	rc, err := b.Blob.Open(ctx, offset)
	if err != nil {
		return nil, err
	}
	return &movingStream{ReadCloser: rc, ctx: ctx, src: b.src, closed: make(chan struct{})}, nil
}

type movingStream struct {
	io.ReadCloser
	ctx    context.Context
	src    *movingSource
	once   sync.Once
	closed chan struct{}
}

func (s *movingStream) Read(p []byte) (int, error) {
	select {
	case <-s.src.release:
	case <-s.ctx.Done():
		return 0, context.Cause(s.ctx)
	case <-s.closed:
		return 0, errors.New("moving stream closed while blocked")
	}
	return s.ReadCloser.Read(p)
}

func (s *movingStream) Progress() int64 { return s.src.progress.Load() }

func (s *movingStream) Close() error {
	s.once.Do(func() { close(s.closed) })
	return s.ReadCloser.Close()
}

// moveFor makes src's blob move every 50 ms, moves times (bounded), then
// stands still; release, if set, then lets its bytes come.
func moveFor(t *testing.T, src *movingSource, moves int, release bool) {
	done := make(chan struct{})
	t.Cleanup(func() { <-done })
	go func() {
		defer close(done)
		for range moves {
			time.Sleep(50 * time.Millisecond)
			src.progress.Add(1)
		}
		if release {
			close(src.release)
		}
	}()
}

// movingFixture is a handler whose first source serves the blob as a
// moving stream; the second (f.local) holds it too unless emptied.
func movingFixture(t *testing.T, stall time.Duration) (*fixture, *movingSource) {
	mv := newMovingSource("egress")
	f := newFixture(t, func(f *fixture, cfg *Config) {
		mv.addBlob(f.ref, f.blob)
		cfg.Sources = []oci.Source{mv, f.local}
		cfg.LookupTimeout = 100 * time.Millisecond
		cfg.StallTimeout = stall
	})
	return f, mv
}

// getWithHeaderTimeout is a GET from a client that, as containerd,
// gives up on a response whose headers do not come within headerWait.
func getWithHeaderTimeout(t *testing.T, url string, headerWait time.Duration) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return send(&http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DisableCompression: true, ResponseHeaderTimeout: headerWait,
	}}, req)
}

// A stream whose first byte comes late, while its blob moves, gets its
// headers before that byte (a client with a header timeout shorter than
// the wait keeps it), and the stall watch waits as long as the blob
// moves: the first byte comes after four stall timeouts.
func TestHandlerMovingStreamSendsHeadersAndWaitsWhileItMoves(t *testing.T) {
	const stall = 400 * time.Millisecond
	f, mv := movingFixture(t, stall)
	moveFor(t, mv, 32, true) // 1.6 s, then the bytes
	resp, body, err := getWithHeaderTimeout(t, f.url("/v2/library/alpine/blobs/"+f.blobDigest.String()), 800*time.Millisecond)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, f.blob) {
		t.Fatalf("status %d, %d bytes, want the blob", resp.StatusCode, len(body))
	}
	if f.local.opens.Load() != 0 {
		t.Errorf("the next source was opened %d times: the moving one should have served", f.local.opens.Load())
	}
}

// Once the blob stops moving, the stall watch cuts the response whose
// headers went out: the client sees an error, not a hang and not a
// complete body.
func TestHandlerMovingStreamThatStopsIsCut(t *testing.T) {
	const stall = 400 * time.Millisecond
	f, mv := movingFixture(t, stall)
	moveFor(t, mv, 8, false) // 0.4 s, then still, and no byte ever
	resp, body, err := getWithHeaderTimeout(t, f.url("/v2/library/alpine/blobs/"+f.blobDigest.String()), 20*time.Second)
	var ne net.Error
	switch {
	case resp == nil && err != nil:
		t.Fatalf("no response: %v; the headers should have gone out while the blob moved", err)
	case err == nil:
		t.Fatalf("status %d, %d bytes: the response completed", resp.StatusCode, len(body))
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("the client timed out (%v): the stall watch did not cut the response", err)
	}
	if resp.StatusCode != http.StatusOK || len(body) != 0 {
		t.Fatalf("status %d with %d bytes before the cut, want 200 and none", resp.StatusCode, len(body))
	}
}

// A Progressing stream whose blob does not move is any stream: it has
// sent nothing when it stalls before its first byte, and the next source
// answers.
func TestHandlerStillProgressingStreamGoesToTheNextSource(t *testing.T) {
	const stall = 300 * time.Millisecond
	f, _ := movingFixture(t, stall)
	resp, body, err := getWithHeaderTimeout(t, f.url("/v2/library/alpine/blobs/"+f.blobDigest.String()), 20*time.Second)
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, f.blob) {
		t.Fatalf("%v %v, %d bytes: want the blob from the next source", err, resp, len(body))
	}
	if f.local.opens.Load() != 1 {
		t.Errorf("the next source was opened %d times, want 1", f.local.opens.Load())
	}
}
