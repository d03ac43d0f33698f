package tracker

import (
	"net/netip"
	"testing"
	"time"
)

func TestDefaultConfigValidates(t *testing.T) {
	ok := DefaultConfig()
	ok.PeerHTTPAddr, ok.TorrentAddr = "127.0.0.1:5000", netip.MustParseAddrPort("127.0.0.1:6881")
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults with the required fields: %v", err)
	}
	for name, edit := range map[string]func(*Config){
		"no peer HTTP address":     func(c *Config) { c.PeerHTTPAddr = "" },
		"no torrent address":       func(c *Config) { c.TorrentAddr = netip.AddrPort{} },
		"name too long":            func(c *Config) { c.Name = string(make([]byte, maxNameLen+1)) },
		"short key":                func(c *Config) { c.Keys = [][]byte{make([]byte, 15)} },
		"negative gossip interval": func(c *Config) { c.GossipInterval = -time.Second },
		"negative gossip nodes":    func(c *Config) { c.GossipNodes = -1 },
		"negative max members":     func(c *Config) { c.MaxMembers = -1 },
		"negative reconnect":       func(c *Config) { c.ReconnectInterval = -time.Second },
		"timeout below interval":   func(c *Config) { c.ReconnectTimeout = time.Second },
		"join state too large":     func(c *Config) { c.JoinStateBytes = 17 << 20 },
		"message too small":        func(c *Config) { c.MaxMessageBytes = 100 },
		"message too large":        func(c *Config) { c.MaxMessageBytes = 1300 },
	} {
		c := ok
		edit(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: valid", name)
		}
	}
}

// A zero Config field means the default: setDefaults fills in exactly
// DefaultConfig's values.
func TestZeroFieldsTakeTheDefaults(t *testing.T) {
	c := Config{Name: "n", PeerHTTPAddr: "127.0.0.1:5000", TorrentAddr: netip.MustParseAddrPort("127.0.0.1:6881")}
	if err := c.setDefaults(); err != nil {
		t.Fatal(err)
	}
	d := DefaultConfig()
	d.Name, d.PeerHTTPAddr, d.TorrentAddr = c.Name, c.PeerHTTPAddr, c.TorrentAddr
	c.Logger, d.Logger = nil, nil
	if c.GossipAddr != d.GossipAddr || c.JoinAttempts != d.JoinAttempts || c.StuckAfter != d.StuckAfter ||
		c.PushPullInterval != d.PushPullInterval || c.MaxDigestsPerMember != d.MaxDigestsPerMember ||
		c.ReconnectTimeout != d.ReconnectTimeout || c.Version != d.Version {
		t.Fatalf("filled %+v\nwant %+v", c, d)
	}
}
