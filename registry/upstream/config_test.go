package upstream

import "testing"

func TestDefaultConfigValidates(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for name, edit := range map[string]func(*Config){
		"negative repositories":   func(c *Config) { c.MaxRepositories = -1 },
		"URL as plain HTTP":       func(c *Config) { c.PlainHTTP = []string{"http://x"} },
		"bad plain HTTP registry": func(c *Config) { c.PlainHTTP = []string{"not a host/"} },
		"bad allowed registry":    func(c *Config) { c.Allow = []string{"https://x/"} },
	} {
		c := DefaultConfig()
		edit(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: valid", name)
		}
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}
