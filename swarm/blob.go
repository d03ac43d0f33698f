package swarm

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/dregistry/dregistry/registry"
)

// localBlob is content this node seeds: complete and verified already.
type localBlob struct {
	content *io.SectionReader
}

func newLocalBlob(ra io.ReaderAt, size int64) *localBlob {
	return &localBlob{content: io.NewSectionReader(ra, 0, size)}
}

func (b *localBlob) Size() int64 { return b.content.Size() }

func (b *localBlob) Open(_ context.Context, offset int64) (io.ReadCloser, error) {
	if offset < 0 || offset > b.Size() {
		return nil, fmt.Errorf("swarm: offset %d outside blob of %d bytes", offset, b.Size())
	}
	return io.NopCloser(io.NewSectionReader(b.content, offset, b.Size()-offset)), nil
}

func (b *localBlob) ReadSeeker() io.ReadSeeker { return io.NewSectionReader(b.content, 0, b.Size()) }

func (b *localBlob) Close() error { return nil }

// memoryBlob is a small blob fetched whole and verified before it is served.
type memoryBlob struct {
	content []byte
}

func newMemoryBlob(content []byte) *memoryBlob { return &memoryBlob{content: content} }

func (b *memoryBlob) Size() int64 { return int64(len(b.content)) }

func (b *memoryBlob) Open(_ context.Context, offset int64) (io.ReadCloser, error) {
	if offset < 0 || offset > b.Size() {
		return nil, fmt.Errorf("swarm: offset %d outside blob of %d bytes", offset, b.Size())
	}
	return io.NopCloser(bytes.NewReader(b.content[offset:])), nil
}

func (b *memoryBlob) ReadSeeker() io.ReadSeeker { return bytes.NewReader(b.content) }

func (b *memoryBlob) Close() error { return nil }

// torrentBlob is a blob being downloaded from the swarm; each Open streams
// from its own torrent reader.
type torrentBlob struct {
	s *Swarm
	e *entry
}

func (b *torrentBlob) Size() int64 { return b.e.size() }

func (b *torrentBlob) Open(ctx context.Context, offset int64) (io.ReadCloser, error) {
	if offset < 0 || offset > b.Size() {
		return nil, fmt.Errorf("swarm: offset %d outside blob of %d bytes", offset, b.Size())
	}
	return newStreamReader(ctx, b.s, b.e, offset), nil
}

// Close leaves the download running: it serves other readers and peers
// until the daemon releases it.
func (b *torrentBlob) Close() error { return nil }

var (
	_ registry.SeekableBlob = (*localBlob)(nil)
	_ registry.SeekableBlob = (*memoryBlob)(nil)
	_ registry.Blob         = (*torrentBlob)(nil)
)
