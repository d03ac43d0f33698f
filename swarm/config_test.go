package swarm

import (
	"testing"

	"github.com/dregistry/dregistry/internal/peerauth"
)

func TestDefaultConfigValidates(t *testing.T) {
	ok := DefaultConfig()
	tr := newTracker()
	ok.DataDir, ok.Seeders, ok.Members, ok.Gate = t.TempDir(), tr, tr, &peerauth.Gate{Member: tr.IsMember}
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults with the required fields: %v", err)
	}
	for name, edit := range map[string]func(*Config){
		"no data dir":           func(c *Config) { c.DataDir = "" },
		"no seeders":            func(c *Config) { c.Seeders = nil },
		"no gate":               func(c *Config) { c.Gate = nil },
		"gate without the keys": func(c *Config) { c.PeerKeys = testKeys(t, 1) },
		"negative max conns":    func(c *Config) { c.MaxConns = -1 },
		"chunk size not 2^n":    func(c *Config) { c.ChunkSize = 100 << 10 },
		"chunk size too small":  func(c *Config) { c.ChunkSize = 8 << 10 },
	} {
		c := ok
		edit(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: valid", name)
		}
	}
}
