package swarm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/dregistry/dregistry/internal/diskcache"
	"github.com/dregistry/dregistry/registry/oci"
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
// from its own torrent reader. It holds a pin of the download's cache entry
// from its first Open (or from Follow) until Close, so the download is not
// evicted while it is served. A warm-path blob starts its download on the
// first Open: Size is the metainfo's, so a HEAD reserves nothing.
type torrentBlob struct {
	s    *Swarm
	size int64
	// start begins (or joins) the download; nil when e is set already.
	start func() (*entry, *diskcache.Entry, error)

	mu     sync.Mutex
	e      *entry
	pin    *diskcache.Entry // nil for a seed's entry
	closed bool
}

func (b *torrentBlob) Size() int64 { return b.size }

func (b *torrentBlob) Open(ctx context.Context, offset int64) (io.ReadCloser, error) {
	if offset < 0 || offset > b.Size() {
		return nil, fmt.Errorf("swarm: offset %d outside blob of %d bytes", offset, b.Size())
	}
	e, err := b.entry()
	if err != nil {
		return nil, err
	}
	return newStreamReader(ctx, b.s, e, offset), nil
}

// entry returns the download, starting it on the first call.
func (b *torrentBlob) entry() (*entry, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errors.New("swarm: blob closed")
	}
	if b.e == nil {
		e, pin, err := b.start()
		if err != nil {
			return nil, err
		}
		b.e, b.pin = e, pin
	}
	return b.e, nil
}

// Arrived counts the bytes of the blob this node has received so far in
// its chunk torrents, pieces in progress included. It only grows while the download
// moves, so a caller bounding a followed read by progress (the egress
// pipeline) can tell a slow swarm from a dead one: a stream delivers
// nothing until a whole piece is in and verified, and a 2 MiB piece from a
// saturated seeder takes seconds. It takes Swarm.mu, then the client lock
// per chunk, one after the other.
func (b *torrentBlob) Arrived() int64 {
	b.mu.Lock()
	e := b.e
	b.mu.Unlock()
	if e == nil {
		return 0
	}
	b.s.mu.Lock()
	chunks := slices.Clone(e.chunks)
	b.s.mu.Unlock()
	var n int64
	for _, c := range chunks {
		if c != nil {
			n += c.info.length() - c.t.BytesMissing()
		}
	}
	return n
}

// Progress grows while the blob moves toward this node: the bytes that
// arrived (Arrived), plus, of a followed blob, what the owner fetched from
// the upstream while this node held everything the owner had published
// (noteOwnerFetch). A caller bounding a followed read by progress (the
// egress pipeline) then waits while the owner's upstream is slow, and
// leaves the swarm only when neither the swarm nor the owner moves.
func (b *torrentBlob) Progress() int64 {
	n := b.Arrived()
	b.mu.Lock()
	e := b.e
	b.mu.Unlock()
	if e != nil {
		n += e.ownerWaited.Load()
	}
	return n
}

// Close leaves the download running: it serves other readers and peers
// until the daemon releases it or the cache evicts it, which it may from
// now on when no other Blob of it is open.
func (b *torrentBlob) Close() error {
	b.mu.Lock()
	pin := b.pin
	b.pin, b.closed = nil, true
	b.mu.Unlock()
	if pin != nil {
		pin.Unpin()
	}
	return nil
}

var (
	_ oci.SeekableBlob = (*localBlob)(nil)
	_ oci.SeekableBlob = (*memoryBlob)(nil)
	_ oci.Blob         = (*torrentBlob)(nil)
)
