package swarm

import (
	"net/netip"
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// Both ends of a torrent connection between keyed members bound the bytes
// their socket holds unsent (TCP_NOTSENT_LOWAT, sockopt.go): the end that
// dialled (the downloader) and the end that accepted (the seeder), so a
// request never queues behind megabytes of the pieces a node uploads on
// the same connection.
func TestTorrentConnectionsBoundTheirUnsentBytes(t *testing.T) {
	tr := newTracker()
	k := testKeys(t, 1)
	// The seeder sends 512 KiB/s, so the connections live for seconds.
	a := startNode(t, tr, "127.0.4.21", "", func(c *Config) { keyed(k)(c); c.UploadLimit = 512 << 10 })
	content, dgst := randomBlob(t, 4<<20) // above SmallBlobSize: the torrent path
	seed(t, a, tr, content, dgst)
	b := startNode(t, tr, "127.0.4.22", "", keyed(k))
	done := drainInBackground(t, b, dgst)

	seeder, downloader := a.TorrentAddr(), netip.MustParseAddr("127.0.4.22")
	var dialled, accepted int
	waitFor(t, "connections between the nodes", func() bool {
		dialled, accepted = 0, 0
		for _, s := range tcpSockets(t) {
			var side *int
			switch {
			case s.local.Addr() == downloader && s.remote == seeder:
				side = &dialled
			case s.local == seeder && s.remote.Addr() == downloader:
				side = &accepted
			default:
				continue
			}
			*side++
			if s.lowat != notSentLowat {
				t.Fatalf("connection %v -> %v: TCP_NOTSENT_LOWAT %d, want %d", s.local, s.remote, s.lowat, notSentLowat)
			}
		}
		return dialled > 0 && accepted > 0
	})
	if err := <-done; err != nil {
		t.Fatalf("download: %v", err)
	}
}

// tcpSocket is one IPv4 TCP socket of this process.
type tcpSocket struct {
	local, remote netip.AddrPort
	lowat         int
}

// tcpSockets lists this process's connected IPv4 TCP sockets from
// /proc/self/fd (every node of the test runs in this process).
func tcpSockets(t *testing.T) []tcpSocket {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out []tcpSocket
	for _, e := range fds {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_STREAM {
			continue // not a socket (or closed meanwhile), or not TCP
		}
		la, err1 := unix.Getsockname(fd)
		ra, err2 := unix.Getpeername(fd)
		l4, ok1 := la.(*unix.SockaddrInet4)
		r4, ok2 := ra.(*unix.SockaddrInet4)
		if err1 != nil || err2 != nil || !ok1 || !ok2 {
			continue // a listener, or not IPv4
		}
		lowat, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT)
		if err != nil {
			continue
		}
		out = append(out, tcpSocket{
			local:  netip.AddrPortFrom(netip.AddrFrom4(l4.Addr), uint16(l4.Port)),
			remote: netip.AddrPortFrom(netip.AddrFrom4(r4.Addr), uint16(r4.Port)),
			lowat:  lowat,
		})
	}
	return out
}
