package registry

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/registry/oci"
)

// fakeSource is an in-process Source for handler tests: the handler is
// under test, not the source.
type fakeSource struct {
	name      string
	tags      map[string]ocispec.Descriptor // "registry/repo:tag"
	manifests map[string]*oci.Manifest      // "registry/repo@digest"
	blobs     map[string][]byte             // "registry/repo@digest"
	seekable  bool
	// spans makes streams oci.FileSpans, read from a temporary file.
	spans bool
	// lookupErr fails every lookup; blockLookups makes them wait for ctx.
	lookupErr    error
	blockLookups bool
	// failAt / stallAt: a stream fails / blocks once it reached this
	// position (-1: never).
	failAt, stallAt int64
	// lie serves other bytes than the digest names.
	lie bool

	manifestCalls, blobCalls, opens atomic.Int64
}

func newFakeSource(name string) *fakeSource {
	return &fakeSource{
		name: name, tags: map[string]ocispec.Descriptor{}, manifests: map[string]*oci.Manifest{},
		blobs: map[string][]byte{}, failAt: -1, stallAt: -1,
	}
}

func (s *fakeSource) Name() string { return s.name }

func (s *fakeSource) lookup(ctx context.Context) error {
	if s.blockLookups {
		<-ctx.Done()
		return ctx.Err()
	}
	return s.lookupErr
}

func (s *fakeSource) Resolve(ctx context.Context, ref oci.Ref, tag string) (ocispec.Descriptor, error) {
	if err := s.lookup(ctx); err != nil {
		return ocispec.Descriptor{}, err
	}
	d, ok := s.tags[ref.String()+":"+tag]
	if !ok {
		return ocispec.Descriptor{}, fmt.Errorf("tag %s: %w", tag, oci.ErrNotFound)
	}
	return d, nil
}

func (s *fakeSource) Manifest(ctx context.Context, ref oci.Ref, dgst digest.Digest) (*oci.Manifest, error) {
	s.manifestCalls.Add(1)
	if err := s.lookup(ctx); err != nil {
		return nil, err
	}
	m, ok := s.manifests[ref.String()+"@"+dgst.String()]
	if !ok {
		return nil, fmt.Errorf("manifest %s: %w", dgst, oci.ErrNotFound)
	}
	return m, nil
}

func (s *fakeSource) Blob(ctx context.Context, ref oci.Ref, dgst digest.Digest) (oci.Blob, error) {
	s.blobCalls.Add(1)
	if err := s.lookup(ctx); err != nil {
		return nil, err
	}
	data, ok := s.blobs[ref.String()+"@"+dgst.String()]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", dgst, oci.ErrNotFound)
	}
	if s.lie {
		data = append([]byte(nil), data...)
		data[len(data)-1] ^= 0xff
	}
	b := &fakeBlob{src: s, data: data}
	if s.seekable {
		return &fakeSeekableBlob{fakeBlob: b}, nil
	}
	return b, nil
}

func (s *fakeSource) addBlob(ref oci.Ref, data []byte) digest.Digest {
	d := digest.FromBytes(data)
	s.blobs[ref.String()+"@"+d.String()] = data
	return d
}

func (s *fakeSource) addManifest(ref oci.Ref, mediaType string, content []byte) ocispec.Descriptor {
	d := digest.FromBytes(content)
	s.manifests[ref.String()+"@"+d.String()] = &oci.Manifest{MediaType: mediaType, Digest: d, Content: content}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(content))}
}

type fakeBlob struct {
	src    *fakeSource
	data   []byte
	closed atomic.Bool
}

func (b *fakeBlob) Size() int64  { return int64(len(b.data)) }
func (b *fakeBlob) Close() error { b.closed.Store(true); return nil }

func (b *fakeBlob) Open(ctx context.Context, offset int64) (io.ReadCloser, error) {
	b.src.opens.Add(1)
	st := &fakeStream{ctx: ctx, data: b.data, pos: offset, failAt: b.src.failAt, stallAt: b.src.stallAt}
	if !b.src.spans {
		return st, nil
	}
	f, err := os.CreateTemp("", "fakespans-*")
	if err != nil {
		return nil, err
	}
	_ = os.Remove(f.Name()) // the descriptor keeps it
	if _, err := f.Write(b.data); err != nil {
		f.Close()
		return nil, err
	}
	return &fakeSpans{fakeStream: st, file: f}, nil
}

// fakeSpans is a fakeStream that also offers its bytes as file spans,
// failing and blocking at the same positions.
type fakeSpans struct {
	*fakeStream
	file *os.File
}

func (s *fakeSpans) Span() (*os.File, int64, error) {
	if s.pos >= int64(len(s.data)) {
		return nil, 0, io.EOF
	}
	end := int64(len(s.data))
	for _, at := range []int64{s.failAt, s.stallAt} {
		if at >= s.pos && at < end {
			end = at
		}
	}
	if end == s.pos {
		if s.pos == s.failAt {
			return nil, 0, errInjected
		}
		<-s.ctx.Done()
		return nil, 0, s.ctx.Err()
	}
	if _, err := s.file.Seek(s.pos, io.SeekStart); err != nil {
		return nil, 0, err
	}
	return s.file, end - s.pos, nil
}

func (s *fakeSpans) Sent(n int64) { s.pos += n }

func (s *fakeSpans) Close() error { return s.file.Close() }

type fakeSeekableBlob struct {
	*fakeBlob
	once sync.Once
	rs   io.ReadSeeker
}

func (b *fakeSeekableBlob) ReadSeeker() io.ReadSeeker {
	b.once.Do(func() {
		b.rs = &fakeStream{ctx: context.Background(), data: b.data, failAt: b.src.failAt, stallAt: b.src.stallAt, stall: make(chan struct{})}
	})
	return b.rs
}

func (b *fakeSeekableBlob) Close() error {
	if s, ok := b.ReadSeeker().(*fakeStream); ok {
		s.unblock()
	}
	return b.fakeBlob.Close()
}

var errInjected = errors.New("injected source failure")

// fakeStream yields data from pos, failing or blocking at the configured
// positions. A block ends when ctx ends or when unblocked (Close).
type fakeStream struct {
	ctx             context.Context
	data            []byte
	pos             int64
	failAt, stallAt int64
	stall           chan struct{}
	unblockOnce     sync.Once
}

func (s *fakeStream) unblock() {
	if s.stall != nil {
		s.unblockOnce.Do(func() { close(s.stall) })
	}
}

func (s *fakeStream) Read(p []byte) (int, error) {
	if s.pos >= int64(len(s.data)) {
		return 0, io.EOF
	}
	end := int64(len(s.data))
	for _, at := range []int64{s.failAt, s.stallAt} {
		if at >= s.pos && at < end {
			end = at
		}
	}
	if end == s.pos {
		if s.pos == s.failAt {
			return 0, errInjected
		}
		select {
		case <-s.ctx.Done():
			return 0, s.ctx.Err()
		case <-s.stall:
			return 0, errors.New("stream closed while blocked")
		}
	}
	n := copy(p, s.data[s.pos:end])
	s.pos += int64(n)
	return n, nil
}

func (s *fakeStream) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += s.pos
	case io.SeekEnd:
		offset += int64(len(s.data))
	}
	if offset < 0 {
		return 0, errors.New("negative seek")
	}
	s.pos = offset
	return offset, nil
}

func (s *fakeStream) Close() error { s.unblock(); return nil }

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n:n]
}
