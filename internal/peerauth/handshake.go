package peerauth

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// The torrent handshake, run on a new TCP connection before BitTorrent's
// own. Both sides prove they hold a cluster key over both sides' fresh
// nonces and their role, so no proof can be replayed or reflected:
//
//	dialer   → listener  magic(8) ‖ nonceD(16)
//	listener → dialer    magic(8) ‖ nonceL(16)
//	dialer   → listener  HMAC(torrentKey, "D" ‖ nonceD ‖ nonceL)
//	listener → dialer    HMAC(torrentKey, "L" ‖ nonceD ‖ nonceL)
//
// The listener sends nothing before the dialer's hello and nothing of its
// own proof before checking the dialer's: an outsider speaking BitTorrent
// (or anything else) reads no byte and sees the connection closed.
var magic = []byte("dregpa1\n")

const (
	nonceLen   = 16
	helloLen   = 8 + nonceLen
	roleDialer = "D"
	roleListen = "L"
)

// HandshakeTimeout bounds the whole handshake.
const HandshakeTimeout = 5 * time.Second

// errHandshake marks a peer that failed the handshake (no key, another
// key, or not speaking it).
var errHandshake = errors.New("peer failed the cluster-key handshake")

// handshake runs the handshake on conn, as the side that dialed or the
// side that accepted. The caller bounds it with a deadline on conn.
func (k *Keys) handshake(conn net.Conn, dialer bool) error {
	var mine [helloLen]byte
	copy(mine[:], magic)
	if _, err := rand.Read(mine[8:]); err != nil {
		return err
	}
	var theirs [helloLen]byte
	if dialer {
		if _, err := conn.Write(mine[:]); err != nil {
			return err
		}
		if err := readHello(conn, &theirs); err != nil {
			return err
		}
	} else {
		if err := readHello(conn, &theirs); err != nil {
			return err
		}
		if _, err := conn.Write(mine[:]); err != nil {
			return err
		}
	}
	nd, nl := theirs[8:], mine[8:]
	myRole, theirRole := roleListen, roleDialer
	if dialer {
		nd, nl = mine[8:], theirs[8:]
		myRole, theirRole = roleDialer, roleListen
	}
	proof := sum(k.torrent[0], []byte(myRole), nd, nl)
	peer := make([]byte, len(proof))
	if dialer {
		if _, err := conn.Write(proof); err != nil {
			return err
		}
	}
	if _, err := io.ReadFull(conn, peer); err != nil {
		return fmt.Errorf("%w: reading its proof: %w", errHandshake, err)
	}
	if !anyKey(k.torrent, peer, []byte(theirRole), nd, nl) {
		return fmt.Errorf("%w: wrong proof", errHandshake)
	}
	if !dialer {
		if _, err := conn.Write(proof); err != nil {
			return err
		}
	}
	return nil
}

func readHello(conn net.Conn, h *[helloLen]byte) error {
	if _, err := io.ReadFull(conn, h[:]); err != nil {
		return fmt.Errorf("%w: reading its hello: %w", errHandshake, err)
	}
	if !bytes.Equal(h[:8], magic) {
		return fmt.Errorf("%w: not speaking it", errHandshake)
	}
	return nil
}

// Counters count handshakes that failed, on either side.
type Counters struct {
	Refused  atomic.Uint64 // accepted connections from a non-member address
	Failed   atomic.Uint64 // connections (either side) failing the handshake
	Accepted atomic.Uint64 // accepted connections that passed
}

// Listener accepts only connections that pass the handshake; others are
// closed and counted. Handshakes run concurrently (a slow or silent peer
// never holds up Accept), at most maxPending at once.
type Listener struct {
	net.Listener
	keys    *Keys
	allow   func(netip.Addr) bool
	count   *Counters
	ready   chan net.Conn
	done    chan struct{}
	closeMu sync.Once
	pending chan struct{}
	wg      sync.WaitGroup
}

const maxPending = 64

// NewListener wraps l. allow, when set, is checked before the handshake:
// only current members' addresses get one.
func (k *Keys) NewListener(l net.Listener, allow func(netip.Addr) bool, count *Counters) *Listener {
	if count == nil {
		count = &Counters{}
	}
	ln := &Listener{
		Listener: l, keys: k, allow: allow, count: count,
		ready: make(chan net.Conn), done: make(chan struct{}), pending: make(chan struct{}, maxPending),
	}
	ln.wg.Add(1)
	go ln.acceptLoop()
	return ln
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, as
			// net/http does, instead of giving up the port for good.
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if l.allow != nil {
			ap, perr := netip.ParseAddrPort(c.RemoteAddr().String())
			if perr != nil || !l.allow(ap.Addr().Unmap()) {
				l.count.Refused.Add(1)
				c.Close()
				continue
			}
		}
		select {
		case l.pending <- struct{}{}:
		default:
			l.count.Failed.Add(1) // too many handshakes in flight
			c.Close()
			continue
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			_ = c.SetDeadline(time.Now().Add(HandshakeTimeout))
			err := l.keys.handshake(c, false)
			<-l.pending
			if err != nil {
				l.count.Failed.Add(1)
				c.Close()
				return
			}
			_ = c.SetDeadline(time.Time{})
			// Counted before the hand-over: once Accept has it, the
			// connection may be served and closed before this goroutine
			// runs again.
			l.count.Accepted.Add(1)
			select {
			case l.ready <- c:
			case <-l.done:
				c.Close()
			}
		}()
	}
}

// Accept returns the next connection that passed the handshake.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and waits for handshakes in flight.
func (l *Listener) Close() error {
	var err error
	l.closeMu.Do(func() {
		close(l.done)
		err = l.Listener.Close()
		l.wg.Wait()
	})
	return err
}

// Dialer dials TCP and runs the handshake as the dialing side.
type Dialer struct {
	Keys   *Keys
	Dialer *net.Dialer
	Count  *Counters
}

// DialContext implements what anacrolix/torrent's dialer.WithContext wants.
func (d Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.Dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(HandshakeTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = c.SetDeadline(deadline)
	if err := d.Keys.handshake(c, true); err != nil {
		if d.Count != nil {
			d.Count.Failed.Add(1)
		}
		c.Close()
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}
