package egress

import (
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/peerauth"
)

func TestDefaultConfigsValidate(t *testing.T) {
	fetcher := DefaultFetcherConfig()
	fetcher.Upstream, fetcher.SpoolDir = &forbiddenUpstream{}, t.TempDir()
	if err := fetcher.Validate(); err != nil {
		t.Fatalf("fetcher defaults with the required fields: %v", err)
	}
	for name, edit := range map[string]func(*FetcherConfig){
		"no upstream":      func(c *FetcherConfig) { c.Upstream = nil },
		"no spool dir":     func(c *FetcherConfig) { c.SpoolDir = "" },
		"negative tag TTL": func(c *FetcherConfig) { c.TagTTL = -time.Second },
	} {
		c := fetcher
		edit(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("fetcher, %s: valid", name)
		}
	}

	source := DefaultSourceConfig()
	source.Self, source.Cluster, source.Fetcher, source.Gate = "a", &cluster{}, &Fetcher{}, &peerauth.Gate{}
	if err := source.Validate(); err != nil {
		t.Fatalf("source defaults with the required fields: %v", err)
	}
	for name, edit := range map[string]func(*SourceConfig){
		"no self":                func(c *SourceConfig) { c.Self = "" },
		"no cluster":             func(c *SourceConfig) { c.Cluster = nil },
		"no fetcher":             func(c *SourceConfig) { c.Fetcher = nil },
		"no gate":                func(c *SourceConfig) { c.Gate = nil },
		"negative attempts":      func(c *SourceConfig) { c.MaxAttempts = -1 },
		"negative pipeline min":  func(c *SourceConfig) { c.PipelineMin = -1 },
		"negative pipeline wait": func(c *SourceConfig) { c.PipelineStall = -time.Second },
	} {
		c := source
		edit(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("source, %s: valid", name)
		}
		if _, err := NewSource(c); err == nil {
			t.Errorf("source, %s: NewSource accepted it", name)
		}
	}
}
