package testenv

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/peerauth"
)

// ClusterKey is a cluster's --cluster-key-file and the peer credentials
// derived from it, so a test can ask nodes as a member would.
type ClusterKey struct {
	Path string
	Keys *peerauth.Keys
}

// NewClusterKey writes a fresh random key file (one 32-byte key).
func NewClusterKey(t testing.TB) *ClusterKey {
	t.Helper()
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatalf("testenv: cluster key: %v", err)
	}
	path := filepath.Join(t.TempDir(), "cluster.key")
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(raw)+"\n"), 0o600); err != nil {
		t.Fatalf("testenv: cluster key: %v", err)
	}
	keys, err := peerauth.New([][]byte{raw})
	if err != nil {
		t.Fatalf("testenv: cluster key: %v", err)
	}
	return &ClusterKey{Path: path, Keys: keys}
}

// Client is an HTTP client bounded by timeout that signs every request
// with the key, as a member does: what a test uses for /peer/v1/… and
// /admin/v1/… of nodes it does not reach from 127.0.0.1. A nil key gives
// an unsigned client.
func (k *ClusterKey) Client(timeout time.Duration) *http.Client {
	// No keep-alive: tests make a client per request, and each kept-alive
	// connection would stay open as an idle goroutine in the daemon (the
	// load test's seeder watch made thousands, counted as a leak).
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	if k != nil {
		c.Transport = &peerauth.Transport{Base: c.Transport, Keys: k.Keys, Node: "e2e-test"}
	}
	return c
}
