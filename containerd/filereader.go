package containerd

import "os"

// fileReaderAt reads a committed blob straight from containerd's content
// directory; File lets an HTTP server send it with sendfile.
type fileReaderAt struct {
	f    *os.File
	size int64
}

func (r *fileReaderAt) ReadAt(p []byte, off int64) (int, error) { return r.f.ReadAt(p, off) }
func (r *fileReaderAt) Size() int64                             { return r.size }
func (r *fileReaderAt) Close() error                            { return r.f.Close() }

// File is the open blob file, positioned at its start.
func (r *fileReaderAt) File() *os.File { return r.f }
