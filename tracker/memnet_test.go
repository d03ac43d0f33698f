package tracker

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// memNet is an in-process network for many memberlist instances, like
// memberlist's MockNetwork, plus what these tests need: it is safe for
// concurrent use, a stopped member's packets are dropped (MockNetwork's
// unbuffered channels would block the sender forever), every member gets
// its own loopback IP, and bytes sent are counted per member.
type memNet struct {
	mu      sync.RWMutex
	byAddr  map[string]*memTransport
	next    int
	dropped atomic.Int64
	apart   map[string]int  // address -> side of a partition; nil when whole
	deaf    map[string]bool // addresses no packet reaches (streams still do)
}

// deafen drops every packet (UDP: gossip, probes) sent to t until hear;
// streams (push/pull, direct snapshots, TCP probes) still reach it.
func (n *memNet) deafen(t *memTransport) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.deaf == nil {
		n.deaf = make(map[string]bool)
	}
	n.deaf[t.addr.String()] = true
}

func (n *memNet) hear(t *memTransport) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.deaf, t.addr.String())
}

func (n *memNet) isDeaf(addr string) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.deaf[addr]
}

// partition cuts the network between the given groups of members (by
// address); heal joins it again.
func (n *memNet) partition(groups ...[]*memTransport) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.apart = make(map[string]int)
	for side, g := range groups {
		for _, t := range g {
			n.apart[t.addr.String()] = side + 1
		}
	}
}

func (n *memNet) heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.apart = nil
}

// reachable reports whether from can reach to across a partition.
func (n *memNet) reachable(from, to string) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.apart == nil || n.apart[from] == n.apart[to]
}

func newMemNet() *memNet { return &memNet{byAddr: make(map[string]*memTransport)} }

func (n *memNet) transport() *memTransport {
	n.mu.Lock()
	n.next++
	ip := netip.AddrFrom4([4]byte{127, 1, byte(n.next / 250), byte(n.next%250 + 1)})
	n.mu.Unlock()
	return n.transportAt(netip.AddrPortFrom(ip, 7946))
}

// transportAt binds addr, replacing a stopped transport there (a restart).
func (n *memNet) transportAt(addr netip.AddrPort) *memTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	t := &memTransport{
		net:      n,
		addr:     addr,
		packetCh: make(chan *memberlist.Packet, 4096),
		streamCh: make(chan net.Conn, 64),
	}
	n.byAddr[t.addr.String()] = t
	return t
}

func (n *memNet) peer(addr string) (*memTransport, error) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	t, ok := n.byAddr[addr]
	if !ok || t.down.Load() {
		return nil, fmt.Errorf("dial %s: connection refused", addr)
	}
	return t, nil
}

type memTransport struct {
	net      *memNet
	addr     netip.AddrPort
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	down     atomic.Bool
	sent     atomic.Int64 // bytes this member wrote: packets and streams
}

var _ memberlist.NodeAwareTransport = (*memTransport)(nil)

func (t *memTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return t.addr.Addr().AsSlice(), int(t.addr.Port()), nil
}

func (t *memTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *memTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	now := time.Now()
	if t.down.Load() {
		return now, errors.New("transport is shut down")
	}
	t.sent.Add(int64(len(b)))
	dest, err := t.net.peer(a.Addr)
	if err != nil || !t.net.reachable(t.addr.String(), a.Addr) || t.net.isDeaf(a.Addr) {
		return now, nil // UDP: a lost packet is not an error
	}
	select {
	case dest.packetCh <- &memberlist.Packet{Buf: append([]byte(nil), b...), From: t.netAddr(), Timestamp: now}:
	default: // receiver overloaded: drop, like a full socket buffer
		t.net.dropped.Add(1)
		t.net.dropped.Add(1)
	}
	return now, nil
}

func (t *memTransport) netAddr() net.Addr {
	return &net.UDPAddr{IP: t.addr.Addr().AsSlice(), Port: int(t.addr.Port())}
}

func (t *memTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

func (t *memTransport) IngestPacket(conn net.Conn, addr net.Addr, now time.Time, shouldClose bool) error {
	return errors.New("not supported")
}

func (t *memTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *memTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.down.Load() {
		return nil, errors.New("transport is shut down")
	}
	dest, err := t.net.peer(a.Addr)
	if err != nil {
		return nil, err
	}
	if !t.net.reachable(t.addr.String(), a.Addr) {
		return nil, fmt.Errorf("dial %s: no route to host", a.Addr)
	}
	local, remote := net.Pipe()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case dest.streamCh <- &countingConn{Conn: remote, n: &dest.sent, from: t.netAddr()}:
		return &countingConn{Conn: local, n: &t.sent, from: dest.netAddr()}, nil
	case <-timer.C:
		local.Close()
		remote.Close()
		return nil, fmt.Errorf("dial %s: timeout", a.Addr)
	}
}

func (t *memTransport) StreamCh() <-chan net.Conn { return t.streamCh }

func (t *memTransport) IngestStream(net.Conn) error { return errors.New("not supported") }

// Shutdown refuses new traffic and resets the connections nobody accepted
// yet, as a dying process's kernel would: their writers must not block.
func (t *memTransport) Shutdown() error {
	t.down.Store(true)
	for {
		select {
		case c := <-t.streamCh:
			c.Close()
		default:
			return nil
		}
	}
}

// countingConn counts the bytes one side writes and reports the peer's
// address. A pipe write blocks until the peer reads, unlike a small TCP
// write into the kernel's buffer; so a write without a deadline (memberlist
// sets none for user messages) gets streamWriteTimeout, as TCP would give
// up on a peer that stopped reading.
type countingConn struct {
	net.Conn
	n        *atomic.Int64
	from     net.Addr
	deadline atomic.Bool // the user set a deadline
}

const streamWriteTimeout = 10 * time.Second

func (c *countingConn) Write(b []byte) (int, error) {
	if !c.deadline.Load() {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	}
	n, err := c.Conn.Write(b)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingConn) SetDeadline(t time.Time) error {
	c.deadline.Store(!t.IsZero())
	return c.Conn.SetDeadline(t)
}

func (c *countingConn) SetWriteDeadline(t time.Time) error {
	c.deadline.Store(!t.IsZero())
	return c.Conn.SetWriteDeadline(t)
}

func (c *countingConn) RemoteAddr() net.Addr { return c.from }

func (t *memTransport) String() string {
	return t.addr.Addr().String() + ":" + strconv.Itoa(int(t.addr.Port()))
}
