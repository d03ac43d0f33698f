package main

import (
	"bytes"
	"encoding/base64"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestJoinNeedsAClusterKey: --join without a key refuses to start unless
// --insecure-gossip says so (and that is logged); a single node needs none.
func TestJoinNeedsAClusterKey(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{5}, 32))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	join := []string{"10.0.0.1:7946"}
	for _, c := range []struct {
		name     string
		cfg      daemonConfig
		wantErr  string
		wantKeys bool
		wantLog  string
	}{
		{"join without a key", daemonConfig{Join: join}, "--join needs --cluster-key-file", false, ""},
		{"join, insecure", daemonConfig{Join: join, InsecureGossip: true}, "", false, "INSECURE"},
		{"single node without a key", daemonConfig{}, "", false, ""},
		{"join with a key", daemonConfig{Join: join, ClusterKeyFile: keyFile}, "", true, ""},
		{"missing key file", daemonConfig{Join: join, ClusterKeyFile: keyFile + ".missing"}, "cluster key file", false, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var logs bytes.Buffer
			_, pk, err := loadClusterKeys(c.cfg, slog.New(slog.NewTextHandler(io.MultiWriter(&logs), nil)))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (pk != nil) != c.wantKeys {
				t.Fatalf("peer keys = %v, want keys: %v", pk, c.wantKeys)
			}
			if !strings.Contains(logs.String(), c.wantLog) {
				t.Fatalf("log %q lacks %q", logs.String(), c.wantLog)
			}
		})
	}
}
