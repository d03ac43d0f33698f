package testenv

import "testing"

// Pause freezes the daemon (SIGSTOP): its sockets still accept connections
// but nothing answers, a hung mirror. The cleanup resumes it so it can stop.
func (n *Node) Pause(t testing.TB) {
	t.Helper()
	if err := n.proc.Pause(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { _ = n.proc.Resume() })
}

// Resume continues a paused daemon (SIGCONT).
func (n *Node) Resume(t testing.TB) {
	t.Helper()
	if err := n.proc.Resume(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}
