package registry

import (
	"net/netip"
	"testing"
	"time"
)

func TestDefaultConfigValidates(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for name, edit := range map[string]func(*Config){
		"no lookup timeout":    func(c *Config) { c.LookupTimeout = 0 },
		"negative stall":       func(c *Config) { c.StallTimeout = -time.Second },
		"bad default registry": func(c *Config) { c.DefaultRegistry = "not a host/" },
	} {
		c := DefaultConfig()
		edit(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: valid", name)
		}
	}
}

func TestDefaultClientsConfigValidates(t *testing.T) {
	if err := DefaultClientsConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for name, edit := range map[string]func(*ClientsConfig){
		"zero network":            func(c *ClientsConfig) { c.Allow = []netip.Prefix{{}} },
		"negative max age":        func(c *ClientsConfig) { c.AddrsMaxAge = -time.Second },
		"negative miss refresh":   func(c *ClientsConfig) { c.AddrsMissRefresh = -time.Second },
		"miss refresh past trust": func(c *ClientsConfig) { c.AddrsMissRefresh = c.AddrsMaxAge + time.Second },
	} {
		c := DefaultClientsConfig()
		edit(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: valid", name)
		}
	}
}
