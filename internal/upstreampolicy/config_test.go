package upstreampolicy

import "testing"

func TestDefaultConfigValidates(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	ok := DefaultConfig()
	ok.Allow, ok.PlainHTTP = []string{"docker.io", Wildcard, "[fd00::5]:5000"}, []string{"127.0.0.1:5001"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("named registries: %v", err)
	}
	for name, edit := range map[string]func(*Config){
		"allow a URL":         func(c *Config) { c.Allow = []string{"https://ghcr.io"} },
		"allow a bad port":    func(c *Config) { c.Allow = []string{"ghcr.io:0"} },
		"plain HTTP wildcard": func(c *Config) { c.PlainHTTP = []string{Wildcard} },
		"plain HTTP a path":   func(c *Config) { c.PlainHTTP = []string{"reg:5000/v2"} },
	} {
		c := ok
		edit(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: valid", name)
		}
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}
