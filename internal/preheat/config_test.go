package preheat

import (
	"context"
	"net/http"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/internal/peerauth"
)

func TestDefaultRunnerConfigValidates(t *testing.T) {
	ok := DefaultRunnerConfig()
	ok.Fetch = newFakeFetch().fetch
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults with Fetch: %v", err)
	}
	for name, edit := range map[string]func(*RunnerConfig){
		"no fetch":         func(c *RunnerConfig) { c.Fetch = nil },
		"negative timeout": func(c *RunnerConfig) { c.Timeout = -time.Second },
	} {
		c := ok
		edit(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: valid", name)
		}
		if _, err := NewRunner(context.Background(), c); err == nil {
			t.Errorf("%s: NewRunner accepted it", name)
		}
	}
}

func TestCoordinatorConfigValidates(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := NewRunner(ctx, RunnerConfig{Fetch: newFakeFetch().fetch})
	if err != nil {
		t.Fatal(err)
	}
	ok := CoordinatorConfig{
		Self: "n1", Members: func() []Member { return nil }, Runner: r,
		Resolve: func(context.Context, string) (ocispec.Descriptor, error) { return ocispec.Descriptor{}, nil },
		Client:  &http.Client{}, Gate: &peerauth.Gate{},
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("complete config: %v", err)
	}
	for name, edit := range map[string]func(*CoordinatorConfig){
		"no members": func(c *CoordinatorConfig) { c.Members = nil },
		"no runner":  func(c *CoordinatorConfig) { c.Runner = nil },
		"no resolve": func(c *CoordinatorConfig) { c.Resolve = nil },
		"no client":  func(c *CoordinatorConfig) { c.Client = nil },
		"no gate":    func(c *CoordinatorConfig) { c.Gate = nil },
	} {
		c := ok
		edit(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: valid", name)
		}
		if _, err := NewCoordinator(c); err == nil {
			t.Errorf("%s: NewCoordinator accepted it", name)
		}
	}
}
