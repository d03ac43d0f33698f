package swarm

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// pieceWriter writes verified pieces to a download's data file with
// O_DIRECT: the download is a transient duplicate of what containerd
// commits, so it is kept out of the page cache (whose page allocation was
// the largest CPU cost of a download here), and the stream reads the piece
// from memory (pieceBuffers). Where the filesystem refuses O_DIRECT (tmpfs)
// or a write is not aligned (the last piece), the buffered file is used.
type pieceWriter struct {
	direct   *os.File // nil: no direct I/O
	buffered *os.File
}

// openDirect opens path for direct writes; nil where the filesystem does
// not support O_DIRECT.
func openDirect(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_DIRECT, 0)
	if errors.Is(err, syscall.EINVAL) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open %s for direct writes: %w", path, err)
	}
	return f, nil
}

// writeAt writes buf at off. A direct write that the kernel refuses as
// misaligned (a device with larger blocks) is retried buffered.
func (w pieceWriter) writeAt(buf []byte, off int64) error {
	if w.direct != nil && aligned(buf, off) {
		_, err := w.direct.WriteAt(buf, off)
		if !errors.Is(err, syscall.EINVAL) {
			return err
		}
	}
	_, err := w.buffered.WriteAt(buf, off)
	return err
}

func aligned(buf []byte, off int64) bool {
	return len(buf) > 0 && off%directAlign == 0 && len(buf)%directAlign == 0 &&
		uintptrOf(buf)%directAlign == 0
}

func (w pieceWriter) close() error {
	if w.direct == nil {
		return nil
	}
	return w.direct.Close()
}
