package registry

import (
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
