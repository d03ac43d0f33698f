package swarm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
	"github.com/opencontainers/go-digest"
)

// downloadStorage keeps the blobs this node downloads in the data directory,
// one pair of files per chunk torrent ("<digest>#<k>"):
// <dir>/<algorithm>/<hex>.<k>.data holds the chunk's bytes as pieces arrive,
// and <hex>.<k>.pieces the infohash followed by one byte per piece (1 = verified), so
// a restart resumes where it stopped. The completion marks are not fsynced:
// after a crash a piece marked complete could hold stale bytes, which the
// whole-blob digest check at the end catches (the download is then discarded).
type downloadStorage struct {
	dir string
	log *slog.Logger // nil: slog.Default()
	// keep bounds the verified pieces held in memory for readers (see
	// pieceBuffers); 0 keeps none, so every read goes to the data file.
	keep int64
	// chunk is the request size of this cluster's peers (Config.ChunkSize):
	// reads of exactly one request are uploads, which leave a kept piece
	// for the stream (see downloadPiece.ReadAt).
	chunk int64
	// opened finds the open downloads by infohash (setIdle); nil in tests
	// that use the storage alone.
	opened *openDownloads
	// freed hears of piece buffers let go (Config.Freed); may be nil. It
	// is called with download.mu held, and sometimes the client lock.
	freed func(int64)
}

// openDownloads is the downloads this storage has open, by infohash. Its
// lock is a leaf: taken under the client lock (OpenTorrent, Close) and
// under Swarm.mu (setIdle), and released before download.mu is taken.
type openDownloads struct {
	mu sync.Mutex
	m  map[metainfo.Hash]*download
}

func newOpenDownloads() *openDownloads {
	return &openDownloads{m: map[metainfo.Hash]*download{}}
}

func (o *openDownloads) add(ih metainfo.Hash, d *download) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.m[ih] = d
}

func (o *openDownloads) remove(ih metainfo.Hash, d *download) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m[ih] == d {
		delete(o.m, ih)
	}
}

func (o *openDownloads) get(ih metainfo.Hash) *download {
	if o == nil {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.m[ih]
}

// setIdle tells chunk torrent ih's download whether a stream reads it:
// while none does, it keeps no verified piece and no spare buffer
// (pieceBuffers.setIdle), so an abandoned download holds no memory for a
// reader that is gone. It returns the bytes of buffers that freed.
func (s downloadStorage) setIdle(ih metainfo.Hash, idle bool) int64 {
	d := s.opened.get(ih)
	if d == nil {
		return 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	before := d.bufs.held()
	d.bufs.setIdle(idle)
	return before - d.bufs.held()
}

// heldBytes is the piece buffers chunk torrent ih's download holds.
func (s downloadStorage) heldBytes(ih metainfo.Hash) int64 {
	d := s.opened.get(ih)
	if d == nil {
		return 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.bufs.held()
}

// paths are the files of chunk k of dgst; k < 0 names a torrent of the
// whole blob (named by its digest alone).
func (s downloadStorage) paths(dgst digest.Digest, k int) (data, pieces string) {
	base := filepath.Join(s.dir, string(dgst.Algorithm()), dgst.Encoded())
	if k >= 0 {
		base += "." + strconv.Itoa(k)
	}
	return base + ".data", base + ".pieces"
}

func (s downloadStorage) logger() *slog.Logger {
	if s.log == nil {
		return slog.Default()
	}
	return s.log
}

// has reports whether chunk k of dgst has files from an earlier run.
func (s downloadStorage) has(dgst digest.Digest, k int) bool {
	_, pieces := s.paths(dgst, k)
	_, err := os.Stat(pieces)
	return err == nil
}

// remove deletes a download's files, every chunk's.
func (s downloadStorage) remove(dgst digest.Digest) error {
	files, err := filepath.Glob(filepath.Join(s.dir, string(dgst.Algorithm()), dgst.Encoded()+".*"))
	if err != nil {
		return err
	}
	return removeFiles(files)
}

func removeFiles(files []string) error {
	var errs []error
	for _, p := range files {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// prune deletes downloads whose files were last written before cutoff.
func (s downloadStorage) prune(cutoff time.Time) error {
	algos, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, algo := range algos {
		if !algo.IsDir() {
			continue
		}
		files, err := os.ReadDir(filepath.Join(s.dir, algo.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, f := range files {
			info, err := f.Info()
			if err != nil || !info.ModTime().Before(cutoff) {
				continue
			}
			if err := os.Remove(filepath.Join(s.dir, algo.Name(), f.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// reserve makes room in the data dir for every chunk of a download before
// the swarm answers for it. Chunk torrents open their files (OpenTorrent)
// only when a stream reaches them, after the registry has answered 200 from
// the swarm, so a disk that cannot hold the blob must be found here: then
// the registry, or the egress's pipeline, takes the next source before the
// first byte. A chunk an earlier run left marks for keeps its files (its
// space was reserved when they were made); the others get their data file
// at full length with its blocks allocated, which the chunk's OpenTorrent
// then keeps (load). On failure the data files this made are removed, so a
// full disk is not left fuller. The caller holds Swarm.mu, so two calls for
// one digest do not interleave.
func (s downloadStorage) reserve(dgst digest.Digest, l layout) error {
	dir := filepath.Join(s.dir, string(dgst.Algorithm()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("download storage: %w", err)
	}
	var need int64
	var todo []int
	for k := range l.numChunks() {
		data, pieces := s.paths(dgst, k)
		if _, err := os.Stat(pieces); err == nil {
			continue
		}
		_, n := l.span(k)
		var st syscall.Stat_t
		if err := syscall.Stat(data, &st); err == nil {
			n -= min(n, st.Blocks*512) // allocated by an earlier reserve
		}
		need += n
		todo = append(todo, k)
	}
	// Checked first, so a blob far larger than the disk fails at once
	// instead of filling the disk chunk by chunk and then letting go.
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err == nil {
		if free := int64(fs.Bavail) * fs.Bsize; need > free {
			return fmt.Errorf("download storage of %s: %d bytes needed, %d free in %s: %w", dgst, need, free, dir, syscall.ENOSPC)
		}
	}
	var made []string
	for _, k := range todo {
		data, _ := s.paths(dgst, k)
		_, n := l.span(k)
		made = append(made, data)
		if err := allocate(data, n); err != nil {
			if rerr := removeFiles(made); rerr != nil {
				err = errors.Join(err, fmt.Errorf("remove the files: %w", rerr))
			}
			return fmt.Errorf("download storage of %s: chunk %d: %w", dgst, k, err)
		}
	}
	return nil
}

// allocate makes the file at path size bytes long with its blocks
// allocated (sparse where the filesystem has no fallocate).
func allocate(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	err = syscall.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, syscall.EOPNOTSUPP) {
		err = f.Truncate(size)
	} else if err != nil {
		err = fmt.Errorf("reserve %d bytes: %w", size, err)
	}
	return errors.Join(err, f.Close())
}

// OpenTorrent opens a download's files. The registry answers a failure here
// (most often a full data dir) from its next source without a word, so it
// is logged as an error: the operator must hear that the disk is full.
func (s downloadStorage) OpenTorrent(ctx context.Context, info *metainfo.Info, ih metainfo.Hash) (storage.TorrentImpl, error) {
	ti, err := s.open(ctx, info, ih)
	if err != nil {
		s.logger().Error("cannot store a download in the data dir; the blob is left to other sources",
			"torrent", info.Name, "dir", s.dir, "err", err)
	}
	return ti, err
}

func (s downloadStorage) open(_ context.Context, info *metainfo.Info, ih metainfo.Hash) (storage.TorrentImpl, error) {
	dgst, k, err := parseChunkName(info.Name)
	if err != nil {
		if dgst, err = digest.Parse(info.Name); err != nil {
			return storage.TorrentImpl{}, fmt.Errorf("download storage: torrent %q is named by neither a chunk nor a digest: %w", info.Name, err)
		}
		k = -1
	}
	dataPath, piecesPath := s.paths(dgst, k)
	if err := os.MkdirAll(filepath.Dir(dataPath), 0o755); err != nil {
		return storage.TorrentImpl{}, fmt.Errorf("download storage: %w", err)
	}
	d := &download{complete: make([]bool, info.NumPieces()), bufs: newPieceBuffers(s.keep), chunk: s.chunk, ih: ih, open: s.opened}
	d.bufs.freed = s.freed
	if d.data, err = os.OpenFile(dataPath, os.O_RDWR|os.O_CREATE, 0o644); err != nil {
		return storage.TorrentImpl{}, fmt.Errorf("download storage: %w", err)
	}
	if d.pieces, err = os.OpenFile(piecesPath, os.O_RDWR|os.O_CREATE, 0o644); err != nil {
		d.data.Close()
		return storage.TorrentImpl{}, fmt.Errorf("download storage: %w", err)
	}
	if err := d.load(ih, info.Length); err != nil {
		d.close()
		// Nothing verified is lost: load fails before any piece of this
		// run is kept, and the marks of an earlier run could not be read.
		// What it did write (a data file the disk could not hold) goes, so
		// a full disk is not left fuller.
		if rerr := removeFiles([]string{dataPath, piecesPath}); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove the files: %w", rerr))
		}
		return storage.TorrentImpl{}, fmt.Errorf("download storage of %s: %w", dgst, err)
	}
	bad, err := d.recheck(info)
	if err != nil {
		d.close()
		return storage.TorrentImpl{}, fmt.Errorf("download storage of %s: recheck: %w", dgst, err)
	}
	if len(bad) > 0 {
		s.logger().Warn("resumed download: pieces on disk failed their hash check and are fetched again",
			"digest", dgst, "pieces", len(bad), "first", bad[0])
	}
	d.out = pieceWriter{buffered: d.data}
	if d.out.direct, err = openDirect(dataPath); err != nil {
		d.close()
		return storage.TorrentImpl{}, fmt.Errorf("download storage of %s: %w", dgst, err)
	}
	s.opened.add(ih, d)
	return storage.TorrentImpl{
		Piece: func(p metainfo.Piece) storage.PieceImpl {
			return downloadPiece{d: d, index: p.Index(), off: p.Offset(), length: p.Length()}
		},
		Close: d.close,
	}, nil
}

// download is the open state of one blob being downloaded.
type download struct {
	data, pieces *os.File
	mu           sync.Mutex
	complete     []bool
	// bufs holds pieces being assembled (at most the library's unverified
	// bytes) and verified pieces not yet read; guarded by mu.
	bufs  *pieceBuffers
	out   pieceWriter // writes verified pieces to data
	chunk int64       // peers' request size; 0: unknown
	ih    metainfo.Hash
	open  *openDownloads // where it is listed while open; may be nil
	// seed, once stored (resource), is the local copy that replaced the
	// finished download: every piece is read from it, checked as a seed's,
	// and the download's files are closed. Lock-free, as grownStorage's.
	seed atomic.Pointer[grownSource]
	// closeOnce closes the files once: at resource, or at Close.
	closeOnce sync.Once
	closeErr  error
}

// load reads the completion marks left by an earlier run. Marks written for
// another infohash (the same digest with other metainfo) are discarded.
func (d *download) load(ih metainfo.Hash, size int64) error {
	st, err := d.data.Stat()
	if err != nil {
		return err
	}
	marks, err := io.ReadAll(d.pieces)
	if err != nil {
		return err
	}
	header := ih.Bytes()
	if len(marks) == len(header)+len(d.complete) && bytes.Equal(marks[:len(header)], header) && st.Size() == size {
		for i, m := range marks[len(header):] {
			d.complete[i] = m == 1
		}
		return nil
	}
	// Start over: a data file of the chunk's size, no piece complete. One
	// reserve made at that size is kept as it is (its blocks stay
	// allocated); the bytes in it count for nothing until a piece is marked.
	if st.Size() != size {
		if err := d.data.Truncate(0); err != nil {
			return err
		}
		if err := d.data.Truncate(size); err != nil {
			return err
		}
	}
	// Reserve the blocks now: a full disk fails here, not mid-stream, and
	// each chunk write no longer allocates blocks (measured: that was most
	// of the write cost). Filesystems without fallocate keep a sparse file.
	if err := syscall.Fallocate(int(d.data.Fd()), 0, 0, size); err != nil && !errors.Is(err, syscall.EOPNOTSUPP) {
		return fmt.Errorf("reserve %d bytes: %w", size, err)
	}
	fresh := append(header, make([]byte, len(d.complete))...)
	if err := d.pieces.Truncate(0); err != nil {
		return err
	}
	_, err = d.pieces.WriteAt(fresh, 0)
	return err
}

func (d *download) mark(index int, complete bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	b := byte(0)
	if complete {
		b = 1
	}
	if _, err := d.pieces.WriteAt([]byte{b}, int64(metainfo.HashSize+index)); err != nil {
		return fmt.Errorf("piece %d completion: %w", index, err)
	}
	d.complete[index] = complete
	return nil
}

// dataReadGrace is how long a closed download's data file stays open for
// reads. The library reads a peer's request outside its client lock, and
// v1.61.0 panics (PeerConn.servePeerRequest) when such a read fails after
// the torrent was dropped: it neither serves nor rejects the request. A
// download is dropped whenever containerd's copy replaces it, so a read in
// flight at that moment must still succeed; the file (even once removed
// from the data dir) stays readable through the open descriptor.
const dataReadGrace = 30 * time.Second

// close ends writing at once and keeps the data file readable for
// dataReadGrace (see there).
func (d *download) close() error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.bufs.release()
		d.bufs = newPieceBuffers(0)
		d.mu.Unlock()
		d.open.remove(d.ih, d)
		data := d.data
		time.AfterFunc(dataReadGrace, func() { _ = data.Close() })
		d.closeErr = errors.Join(d.out.close(), d.pieces.Close())
	})
	return d.closeErr
}

// completeAll reports whether every piece is verified and on disk.
func (d *download) completeAll() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return !slices.Contains(d.complete, false)
}

// resource serves the finished download's pieces from src (the local copy
// that replaced it, with a seed's first-read check) from the next read on,
// and closes its files: a read already going keeps the data file for
// dataReadGrace, as at close. The torrent, its connections and the
// requests peers have in flight stay. Pieces the library asks for later
// report complete unless src's check finds them corrupt.
func (d *download) resource(src *grownSource) error {
	d.seed.Store(src)
	return d.close()
}

// seedPiece is piece p read from the copy that replaced the download, or
// ok false while the download's own files serve it.
func (p downloadPiece) seedPiece() (seedPiece, bool) {
	src := p.d.seed.Load()
	if src == nil {
		return seedPiece{}, false
	}
	return seedPiece{section: io.NewSectionReader(src.content, p.off, p.length), index: p.index, check: src.check}, true
}

// isUpload tells a peer's request (the library reads each one whole) from
// the stream reading a piece of length through: the stream's reads follow
// the consumer's buffer. A piece of one chunk (blobs up to 64 MiB) cannot be
// told apart, so any read through it counts as the stream's. A stream read
// that happens to look like a request only keeps the piece until
// pieceBuffers' bound drops it.
func (d *download) isUpload(off, n, length int64) bool {
	return d.chunk > 0 && length > d.chunk && off%d.chunk == 0 && n == d.chunk
}

type downloadPiece struct {
	d           *download
	index       int
	off, length int64
}

func (p downloadPiece) ReadAt(b []byte, off int64) (int, error) {
	if sp, ok := p.seedPiece(); ok {
		return sp.ReadAt(b, off)
	}
	if off >= p.length {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.length-off)]
	p.d.mu.Lock()
	if buf, verified := p.d.bufs.readable(p.index); buf != nil {
		n := copy(b, buf[off:])
		if verified && off+int64(n) == p.length && !p.d.isUpload(off, int64(n), p.length) {
			p.d.bufs.readThrough(p.index)
		}
		p.d.mu.Unlock()
		return n, nil
	}
	p.d.mu.Unlock()
	n, err := p.d.data.ReadAt(b, p.off+off)
	if err == nil && n < len(b) {
		err = io.EOF
	}
	return n, err
}

// WriteTo hands the piece being assembled to the library's piece hash
// without copying it out first. The library writes no chunk to a piece
// while it is hashed, and only MarkComplete/MarkNotComplete (after the hash)
// recycle the buffer, so it is read without the lock.
func (p downloadPiece) WriteTo(w io.Writer) (int64, error) {
	if sp, ok := p.seedPiece(); ok {
		return io.Copy(w, io.NewSectionReader(sp, 0, p.length))
	}
	p.d.mu.Lock()
	buf := p.d.bufs.assembly(p.index, p.length, false)
	p.d.mu.Unlock()
	if buf == nil {
		return io.Copy(w, io.NewSectionReader(p.d.data, p.off, p.length))
	}
	n, err := w.Write(buf)
	return int64(n), err
}

// WriteAt copies a chunk into the piece's buffer: the connection's read loop
// does no disk I/O, and the piece check hashes from memory.
func (p downloadPiece) WriteAt(b []byte, off int64) (int, error) {
	if _, ok := p.seedPiece(); ok {
		return 0, errReadOnly
	}
	if off < 0 || off+int64(len(b)) > p.length {
		return 0, fmt.Errorf("write of %d bytes at %d overflows piece %d", len(b), off, p.index)
	}
	p.d.mu.Lock()
	defer p.d.mu.Unlock()
	return copy(p.d.bufs.assembly(p.index, p.length, true)[off:], b), nil
}

// MarkComplete writes the verified piece to the data file, then records it;
// the buffer stays for readers that have not read the piece yet.
func (p downloadPiece) MarkComplete() error {
	if _, ok := p.seedPiece(); ok {
		return nil
	}
	p.d.mu.Lock()
	buf := p.d.bufs.assembly(p.index, p.length, false)
	p.d.mu.Unlock()
	if buf != nil {
		if err := p.d.out.writeAt(buf, p.off); err != nil {
			return fmt.Errorf("write piece %d: %w", p.index, err)
		}
	}
	if err := p.d.mark(p.index, true); err != nil {
		return err
	}
	p.d.mu.Lock()
	p.d.bufs.verified(p.index)
	if !slices.Contains(p.d.complete, false) {
		p.d.bufs.dropSpare()
	}
	p.d.mu.Unlock()
	return nil
}

// MarkNotComplete drops the piece's data (it failed its hash check).
func (p downloadPiece) MarkNotComplete() error {
	if sp, ok := p.seedPiece(); ok {
		return sp.MarkNotComplete()
	}
	p.d.mu.Lock()
	p.d.bufs.discard(p.index)
	p.d.bufs.readThrough(p.index)
	p.d.mu.Unlock()
	return p.d.mark(p.index, false)
}

func (p downloadPiece) Completion() storage.Completion {
	if sp, ok := p.seedPiece(); ok {
		return sp.Completion()
	}
	p.d.mu.Lock()
	defer p.d.mu.Unlock()
	return storage.Completion{Ok: true, Complete: p.d.complete[p.index]}
}
