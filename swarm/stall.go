package swarm

import (
	"bytes"
)

// stallStatusBytes bounds the torrent status a stall logs.
const stallStatusBytes = 16 << 10

// logStall logs, when a stream of e made no progress for StallTimeout at
// blob offset at, the library's status of the chunk torrent it waited on:
// its connections, what each has requested and how fast each moved. A stall
// is a bug until proven otherwise, and this is what tells which peer held
// the piece. It takes s.mu, and after it the client lock (the status).
func (s *Swarm) logStall(e *entry, at int64) {
	k := e.lay.chunkOf(at)
	s.mu.Lock()
	var c *chunk
	if k < len(e.chunks) {
		c = e.chunks[k]
	}
	s.mu.Unlock()
	if c == nil {
		s.log.Warn("stream stalled before its chunk joined the swarm", "digest", e.digest, "at", at, "chunk", k)
		return
	}
	var buf bytes.Buffer
	c.t.DregistryWriteStatus(&buf)
	status := buf.Bytes()
	if len(status) > stallStatusBytes {
		status = append(status[:stallStatusBytes], "…"...)
	}
	s.log.Warn("stream stalled", "digest", e.digest, "at", at, "chunk", k, "peers now", peerAddrs(s.peersOf(e.digest)), "status", string(status))
}
