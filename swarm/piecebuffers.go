package swarm

import "unsafe"

// pieceBuffers holds a download's pieces in memory: pieces being assembled
// from chunks until they pass their hash check, and verified pieces until a
// reader has read them through. The data file is written around the page
// cache (directio.go), so without the kept copy the stream would read every
// piece back from the disk; measured, the page-cache write alone cost
// 0.2–2.2 CPU s/GB on this VM, more than both hash checks.
// Not safe for concurrent use: the download's mutex guards it.
type pieceBuffers struct {
	assembling map[int][]byte
	kept       map[int][]byte
	keptOrder  []int // kept pieces, oldest first (may name pieces already dropped)
	keptBytes  int64
	// keep bounds keptBytes: a reader that falls behind (or none at all)
	// reads the oldest pieces from the data file instead.
	keep  int64
	spare [][]byte
	// idle: no stream reads the download (see Swarm.readerClosed), so
	// verified pieces and spare buffers are not kept for one.
	idle bool
	// freed, if set, hears of buffers let go to the garbage collector
	// (Config.Freed).
	freed func(int64)
}

// maxSpareBuffers bounds the buffers kept for reuse: allocating fresh ones
// costs page faults (first touch), reusing them costs nothing.
const maxSpareBuffers = 16

func newPieceBuffers(keep int64) *pieceBuffers {
	return &pieceBuffers{assembling: map[int][]byte{}, kept: map[int][]byte{}, keep: keep}
}

// assembly returns the buffer of a piece being assembled, creating it (of
// length bytes, aligned for direct I/O) if create is set.
func (pb *pieceBuffers) assembly(index int, length int64, create bool) []byte {
	buf, ok := pb.assembling[index]
	if !ok && create {
		if n := len(pb.spare); n > 0 && int64(cap(pb.spare[n-1])) >= length {
			buf, pb.spare = pb.spare[n-1][:length], pb.spare[:n-1]
		} else {
			buf = alignedBuffer(length)
		}
		pb.assembling[index] = buf
	}
	return buf
}

// readable returns the in-memory copy of a piece (assembling or verified).
func (pb *pieceBuffers) readable(index int) (buf []byte, verified bool) {
	if buf, ok := pb.kept[index]; ok {
		return buf, true
	}
	return pb.assembling[index], false
}

// verified moves a piece that passed its check (and is on disk) to the kept
// pieces, dropping the oldest beyond keep.
func (pb *pieceBuffers) verified(index int) {
	buf, ok := pb.assembling[index]
	if !ok {
		return
	}
	delete(pb.assembling, index)
	if pb.keep <= 0 || pb.idle {
		pb.recycle(buf)
		return
	}
	pb.kept[index] = buf
	pb.keptOrder = append(pb.keptOrder, index)
	pb.keptBytes += int64(len(buf))
	for pb.keptBytes > pb.keep && len(pb.keptOrder) > 0 {
		oldest := pb.keptOrder[0]
		pb.keptOrder = pb.keptOrder[1:]
		pb.readThrough(oldest)
	}
	if len(pb.keptOrder) > 2*len(pb.kept)+16 {
		pb.compactOrder()
	}
}

// readThrough forgets a verified piece a reader has read to its end.
func (pb *pieceBuffers) readThrough(index int) {
	if buf, ok := pb.kept[index]; ok {
		delete(pb.kept, index)
		pb.keptBytes -= int64(len(buf))
		pb.recycle(buf)
	}
}

// discard forgets a piece being assembled (it failed its check).
func (pb *pieceBuffers) discard(index int) {
	if buf, ok := pb.assembling[index]; ok {
		delete(pb.assembling, index)
		pb.recycle(buf)
	}
}

// compactOrder drops entries of pieces no longer kept, so keptOrder stays
// proportional to the kept pieces when readers drop them first.
func (pb *pieceBuffers) compactOrder() {
	live := pb.keptOrder[:0]
	for _, i := range pb.keptOrder {
		if _, ok := pb.kept[i]; ok {
			live = append(live, i)
		}
	}
	pb.keptOrder = live
}

func (pb *pieceBuffers) recycle(buf []byte) {
	if len(pb.spare) < maxSpareBuffers && !pb.idle {
		pb.spare = append(pb.spare, buf)
		return
	}
	pb.let(int64(cap(buf)))
}

// let reports n bytes of buffers let go.
func (pb *pieceBuffers) let(n int64) {
	if n > 0 && pb.freed != nil {
		pb.freed(n)
	}
}

// dropSpare frees the buffers kept for reuse once no piece is left to
// download; kept pieces stay until read or dropped by keep.
func (pb *pieceBuffers) dropSpare() {
	pb.let(pb.spareBytes())
	pb.spare = nil
}

func (pb *pieceBuffers) spareBytes() int64 {
	var n int64
	for _, b := range pb.spare {
		n += int64(cap(b))
	}
	return n
}

// release lets go of every buffer (the download closed).
func (pb *pieceBuffers) release() {
	pb.let(pb.held())
	clear(pb.assembling)
	clear(pb.kept)
	pb.keptOrder, pb.keptBytes, pb.spare = nil, 0, nil
}

// setIdle stops (or resumes) keeping pieces for a reader. Going idle frees
// every verified piece and spare buffer at once; pieces being assembled
// stay (the library is writing them) and go once verified.
func (pb *pieceBuffers) setIdle(idle bool) {
	pb.idle = idle
	if !idle {
		return
	}
	pb.let(pb.keptBytes + pb.spareBytes())
	clear(pb.kept)
	pb.keptOrder, pb.keptBytes, pb.spare = nil, 0, nil
}

// held is the bytes of piece buffers held: assembling, kept and spare.
func (pb *pieceBuffers) held() int64 {
	var n int64
	for _, b := range pb.assembling {
		n += int64(cap(b))
	}
	for _, b := range pb.spare {
		n += int64(cap(b))
	}
	return n + pb.keptBytes
}

// directAlign is the alignment O_DIRECT needs of buffers, offsets and
// lengths: 4 KiB covers every logical block size in common use.
const directAlign = 4096

// alignedBuffer allocates n bytes starting on a directAlign boundary.
func alignedBuffer(n int64) []byte {
	b := make([]byte, n+directAlign)
	skip := (directAlign - int(uintptrOf(b)%directAlign)) % directAlign
	return b[skip : int64(skip)+n : int64(skip)+n]
}

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
