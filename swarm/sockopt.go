package swarm

import (
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// notSentLowat bounds the bytes a peer connection's socket holds that TCP
// has not sent yet (TCP_NOTSENT_LOWAT). A connection carries this node's
// requests to the peer and the pieces it uploads to the same peer, in one
// byte stream. Without the bound the kernel takes megabytes of pieces into
// the socket, and a request written after them waits until they have
// crossed a saturated uplink. Traced in BenchmarkRollout (8 nodes, 25
// Mbit/s links; docs/benchmarks.md, "Where a piece's time goes"), requests
// took up to 13 s to reach a peer (99.9th percentile 1.9–5.9 s), long
// enough for the steal rules to move each one before it arrived, and a
// stream stalled for 10 s. With the bound the backlog stays in the
// library's write buffer, which a request enters ahead of pieces, so a
// request waits at most for the piece message being written: 1.6–2.0 s at
// most in the same benchmark, 0.6 s at the 99th percentile.
const notSentLowat = 16 << 10

// setNotSentLowat applies notSentLowat to a socket; it is a net.Dialer's
// Control.
func setNotSentLowat(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, notSentLowat)
	}); err != nil {
		return fmt.Errorf("swarm: socket option: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("swarm: set TCP_NOTSENT_LOWAT: %w", serr)
	}
	return nil
}

// lowatListener applies notSentLowat to every connection it accepts. A
// connection whose option cannot be set (not TCP) is kept as it is: the
// bound shortens waits, it is not needed for correctness.
type lowatListener struct{ net.Listener }

func (l lowatListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			_ = setNotSentLowat("", "", rc)
		}
	}
	return c, nil
}
