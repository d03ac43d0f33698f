package testenv

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Outsider is a host on the test machine's network that is not a member of
// any cluster: its own network namespace, linked by a veth pair to the
// test's namespace. The test's end of the link (HostAddr) is one more
// address of this host, so a node listening on all addresses (":PORT", as
// the chart runs it) is reachable from the outsider at HostAddr:PORT, and
// sees requests from Addr, which is none of the host's own addresses.
//
// Use it to check what a stranger gets from a node:
//
//	o := testenv.NewOutsider(t)
//	status, body, err := o.Get("http://"+o.HostAddr.String()+":5000/v2/", 5*time.Second)
type Outsider struct {
	// Addr is the outsider's address (198.18.<n>.6); HostAddr is the test
	// namespace's end of the link (198.18.<n>.5).
	Addr, HostAddr netip.Addr
	Netns          *Netns
	Link           *Link
}

// NewOutsider makes the outsider's namespace and link. It uses the /30
// 198.18.<pid%256>.4 (netns_test.go's /30 is .0), so a test process has one
// outsider at a time; the cleanup removes it.
func NewOutsider(t testing.TB) *Outsider {
	t.Helper()
	ns := NewNetns(t, "outsider")
	sub := fmt.Sprintf("198.18.%d", os.Getpid()%256)
	link := NewLink(t, "o", nil, sub+".5/30", ns, sub+".6/30")
	return &Outsider{
		Addr:     netip.MustParseAddr(sub + ".6"),
		HostAddr: netip.MustParseAddr(sub + ".5"),
		Netns:    ns,
		Link:     link,
	}
}

// Get sends one GET from the outsider and returns the status and the whole
// body (bounded: at most 64 MiB), all within timeout.
func (o *Outsider) Get(url string, timeout time.Duration) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	return o.Do(req)
}

// Do sends req from the outsider (give it a context with a deadline) and
// returns the status and the whole body, at most 64 MiB. Redirects are not
// followed.
func (o *Outsider) Do(req *http.Request) (int, []byte, error) {
	if _, ok := req.Context().Deadline(); !ok {
		return 0, nil, fmt.Errorf("outsider: request without a deadline")
	}
	resp, err := o.client().Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, body, err
}

// client dials from the outsider's namespace, a fresh connection per
// request, so no connection of one test outlives it.
func (o *Outsider) client() *http.Client {
	return &http.Client{
		Transport: &http.Transport{DialContext: o.DialContext, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// DialContext opens a TCP connection from the outsider's namespace to addr
// (an IP:port; names are not resolved there). A socket stays in the
// namespace it was made in, so only its creation runs on a thread switched
// into the namespace and back. The thread must live on: the test's child
// processes get their parent-death signal when the thread that started
// them exits.
func (o *Outsider) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if _, err := netip.ParseAddrPort(addr); err != nil {
		return nil, fmt.Errorf("outsider: dial %q: want IP:port: %w", addr, err)
	}
	type result struct {
		conn net.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		conn, restored, err := o.dialHere(ctx, network, addr)
		if restored {
			runtime.UnlockOSThread()
		} // else the thread stays locked and ends with the goroutine: it is in the wrong namespace
		done <- result{conn, err}
	}()
	select {
	case r := <-done:
		return r.conn, r.err
	case <-ctx.Done():
		go func() { // the dial ends by ctx too; close what it made
			if r := <-done; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// dialHere runs on a locked thread; restored says it is back in its own
// namespace.
func (o *Outsider) dialHere(ctx context.Context, network, addr string) (conn net.Conn, restored bool, err error) {
	own, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return nil, true, fmt.Errorf("outsider: %w", err)
	}
	defer own.Close()
	target, err := os.Open(filepath.Join("/var/run/netns", o.Netns.Name))
	if err != nil {
		return nil, true, fmt.Errorf("outsider: %w", err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("outsider: setns %s: %w", o.Netns.Name, err)
	}
	var d net.Dialer
	conn, err = d.DialContext(ctx, network, addr)
	if rerr := unix.Setns(int(own.Fd()), unix.CLONE_NEWNET); rerr != nil {
		return conn, false, err
	}
	return conn, true, err
}
