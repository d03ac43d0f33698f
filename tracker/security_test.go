package tracker

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func TestClusterKey(t *testing.T) {
	a, b := key('a'), key('b')
	cases := []struct {
		name    string
		cluster [][]byte // keys of the running members
		joiner  [][]byte
		joins   bool
	}{
		{"same key", [][]byte{a}, [][]byte{a}, true},
		{"wrong key", [][]byte{a}, [][]byte{b}, false},
		{"no key, cluster encrypted", [][]byte{a}, nil, false},
		{"key, cluster unencrypted", nil, [][]byte{a}, false},
		{"rotation step 1: new key added as secondary", [][]byte{a}, [][]byte{a, b}, true},
		{"rotation step 2: new key primary, old still known", [][]byte{a, b}, [][]byte{b, a}, true},
		{"rotation step 3: old key removed", [][]byte{b, a}, [][]byte{b}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, 2, func(_ int, cfg *Config) { cfg.Keys = tc.cluster })
			_, err := c.start("joiner", func(cfg *Config) {
				cfg.Keys = tc.joiner
				cfg.JoinAttempts = 1
			})
			if tc.joins {
				if err != nil {
					t.Fatalf("join failed: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("a node with a mismatched key joined")
			}
			if !strings.Contains(err.Error(), "--cluster-key-file") {
				t.Fatalf("the join error does not say why: %v", err)
			}
			// The cluster must not have let it in, even briefly.
			for _, tr := range c.nodes {
				for _, m := range tr.Members() {
					if m.Name == "joiner" {
						t.Fatalf("%s lists the rejected node as a member", tr.LocalName())
					}
				}
			}
		})
	}
}

func TestNoKeyLogsAWarning(t *testing.T) {
	var logs bytes.Buffer
	n := newMemNet()
	cfg := testConfig("solo", n.transport())
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer crash(tr)
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "NOT encrypted") {
		t.Fatalf("no warning about unencrypted gossip; logs: %s", logs.String())
	}
}

func TestBadKeyIsRefusedAtStart(t *testing.T) {
	n := newMemNet()
	cfg := testConfig("solo", n.transport())
	cfg.Keys = [][]byte{[]byte("too short")}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "key size") {
		t.Fatalf("New with a 9-byte key: %v", err)
	}
}

func TestJoinGivesUpWithinItsBounds(t *testing.T) {
	c := newCluster(t, 1, nil)
	// Nobody listens there: each attempt fails fast; ctx ends the retries.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	tr := c.nodes[0]
	tr.cfg.JoinAttempts = 1000
	err := tr.Join(ctx, []string{"127.9.9.9:7946"})
	if err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("Join to nobody: %v", err)
	}
}

func TestLoadKeyFile(t *testing.T) {
	dir := t.TempDir()
	write := func(content string) string {
		p := filepath.Join(dir, "key")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	k32 := "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE=" // 32 × 'a'
	k16 := "YmJiYmJiYmJiYmJiYmJiYg=="                     // 16 × 'b'
	keys, err := LoadKeyFile(write("# cluster keys\n" + k32 + "\n\n  " + k16 + "  \n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || !bytes.Equal(keys[0], key('a')) || !bytes.Equal(keys[1], bytes.Repeat([]byte{'b'}, 16)) {
		t.Fatalf("keys = %q", keys)
	}
	for name, content := range map[string]string{
		"empty":      "# nothing\n\n",
		"not base64": "not*base64\n",
		"wrong size": "YWJj\n", // "abc"
	} {
		if _, err := LoadKeyFile(write(content)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := LoadKeyFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file: accepted")
	}
}
