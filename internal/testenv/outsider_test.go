package testenv

import (
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func TestOutsiderReachesTheHostFromItsOwnAddressOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("creates a network namespace")
	}
	o := NewOutsider(t)
	ln, err := net.Listen("tcp", net.JoinHostPort(o.HostAddr.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(r.RemoteAddr))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })

	// A child with a parent-death signal, as containerd and the daemons
	// run: the dials below must not end the thread that started it.
	child := exec.Command("sleep", "60")
	child.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	t.Cleanup(func() { _ = child.Process.Kill(); <-exited })
	for range 50 {
		if _, _, err := o.Get("http://"+ln.Addr().String()+"/", 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-exited:
		t.Fatalf("a child of the test died while the outsider dialed: %v", err)
	default:
	}

	status, body, err := o.Get("http://"+ln.Addr().String()+"/", 5*time.Second)
	if err != nil || status != http.StatusOK {
		t.Fatalf("GET from the outsider: %d, %v", status, err)
	}
	from, err := netip.ParseAddrPort(string(body))
	if err != nil || from.Addr() != o.Addr {
		t.Fatalf("the server saw the request from %q, want %s", body, o.Addr)
	}

	// The outsider's loopback is its own: a server on this host's
	// loopback is out of its reach.
	lo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lo.Close()
	if status, _, err := o.Get("http://"+lo.Addr().String()+"/", 2*time.Second); err == nil {
		t.Fatalf("the outsider reached this host's loopback: %d", status)
	}
	if _, _, err := o.Get("http://localhost:1/", time.Second); err == nil {
		t.Fatal("a host name was dialed; want IP:port only")
	}
}
