package swarm

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer collects a node's log lines; the library logs from its own
// goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// logTo sends a node's log (info and up) to buf.
func logTo(buf *syncBuffer) func(*Config) {
	return func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
}

// linesWith returns the log lines holding every one of parts.
func linesWith(log string, parts ...string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		all := l != ""
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			out = append(out, l)
		}
	}
	return out
}

func TestBanOfABadPeerIsLoggedAsAWarningWithItsIP(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 8<<20)
	liar := startNode(t, tr, "127.0.0.21", "", nil)
	seedCorrupt(t, liar, tr, content, dgst)
	var log syncBuffer
	d := startNode(t, tr, "127.0.0.22", "", func(c *Config) { logTo(&log)(c); c.StallTimeout = time.Minute })

	// Reading asks for pieces; an honest seeder joins once the liar is
	// banned, and the read ends before the test closes the stream.
	done := drainInBackground(t, d, dgst)
	waitFor(t, "the liar to be banned", func() bool { return banned(d, "127.0.0.21") })
	waitFor(t, "the ban in the log", func() bool {
		return len(linesWith(log.String(), "level=WARN", MsgPeerBanned, "peer=127.0.0.21")) > 0
	})
	seed(t, startNode(t, tr, "127.0.0.26", "", nil), tr, content, dgst)
	if err := <-done; err != nil {
		t.Fatalf("read after the ban: %v", err)
	}
	// The library's info chatter stays out; only the ban is raised.
	for _, l := range linesWith(log.String(), "lib=anacrolix") {
		if !strings.Contains(l, "level=WARN") && !strings.Contains(l, "level=ERROR") {
			t.Errorf("library line below warn kept: %s", l)
		}
	}
}

func TestWrongSmallBlobFromAPeerIsRejectedAndFetchedFromAnother(t *testing.T) {
	tr := newTracker()
	content, dgst := randomBlob(t, 256<<10) // under SmallBlobSize: HTTP path
	liar := startNode(t, tr, "127.0.0.23", "", nil)
	seedCorrupt(t, liar, tr, content, dgst)
	good := startNode(t, tr, "127.0.0.24", "", nil)
	seed(t, good, tr, content, dgst)
	var log syncBuffer
	d := startNode(t, tr, "127.0.0.25", "", logTo(&log))

	// Seeders are tried in random order: fetch until the liar was asked
	// first once (each try is a fresh fetch; 2^-20 to never see it).
	for i := 0; i < 20 && len(linesWith(log.String(), "peer sent wrong bytes")) == 0; i++ {
		got, err := readBlob(t, d, dgst, 0)
		if err != nil {
			t.Fatalf("fetch %d: %v", i, err)
		}
		mustEqual(t, got, content)
	}
	lines := linesWith(log.String(), "level=WARN", "peer sent wrong bytes", liar.http.Listener.Addr().String(), dgst.String())
	if len(lines) == 0 {
		t.Fatalf("no warning names the liar %s; log:\n%s", liar.http.Listener.Addr(), log.String())
	}
	if bad := linesWith(log.String(), "peer sent wrong bytes", good.http.Listener.Addr().String()); len(bad) > 0 {
		t.Fatalf("the honest seeder was blamed: %s", bad[0])
	}
}
