package tracker

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// nodeMeta is what every member gossips about itself in memberlist's node
// metadata (at most memberlist.MetaMaxSize = 512 bytes):
//
//	version:1 roles:1 uvarint(epoch) str(httpAddr) addrport(torrentAddr) str(version)
//
// str is uvarint length + bytes; addrport is uvarint length + netip.AddrPort
// binary form. The epoch identifies this run of the daemon, so peers drop a
// restarted member's old announcements.
type nodeMeta struct {
	Egress      bool
	Epoch       uint64
	HTTPAddr    string
	TorrentAddr netip.AddrPort
	Version     string
}

const (
	metaVersion  = 1
	roleEgress   = 1 << 0
	maxMetaField = 200
)

func (m nodeMeta) encode() ([]byte, error) {
	if len(m.HTTPAddr) > maxMetaField || len(m.Version) > maxMetaField {
		return nil, fmt.Errorf("node metadata field longer than %d bytes", maxMetaField)
	}
	var roles byte
	if m.Egress {
		roles |= roleEgress
	}
	b := []byte{metaVersion, roles}
	b = binary.AppendUvarint(b, m.Epoch)
	b = appendString(b, m.HTTPAddr)
	ap, err := m.TorrentAddr.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("torrent address: %w", err)
	}
	b = appendString(b, string(ap))
	b = appendString(b, m.Version)
	return b, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func decodeMeta(b []byte) (nodeMeta, error) {
	var m nodeMeta
	if len(b) < 2 || b[0] != metaVersion {
		return m, malformed("node metadata: unknown version")
	}
	if b[1]&^roleEgress != 0 {
		return m, malformed("node metadata: unknown roles %#x", b[1])
	}
	m.Egress = b[1]&roleEgress != 0
	r := reader{b: b[2:]}
	m.Epoch = r.uvarint()
	m.HTTPAddr = r.str()
	ap := r.str()
	m.Version = r.str()
	if r.err != nil {
		return nodeMeta{}, fmt.Errorf("node metadata: %w", r.err)
	}
	if len(r.b) != 0 {
		return nodeMeta{}, malformed("node metadata: trailing bytes")
	}
	if err := m.TorrentAddr.UnmarshalBinary([]byte(ap)); err != nil {
		return nodeMeta{}, malformed("node metadata: torrent address: %v", err)
	}
	return m, nil
}

func (r *reader) str() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > maxMetaField || n > uint64(len(r.b)) {
		r.err = malformed("string of %d bytes", n)
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}
