package egress

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/registry"
	"github.com/dregistry/dregistry/registry/oci"
)

// hangingResolve is an upstream whose tag lookups hang, once hang is set,
// until their context ends: a registry that accepts and never answers.
type hangingResolve struct {
	oci.Source
	hang atomic.Bool
}

func (h *hangingResolve) Resolve(ctx context.Context, ref oci.Ref, tag string) (ocispec.Descriptor, error) {
	if h.hang.Load() {
		<-ctx.Done()
		return ocispec.Descriptor{}, context.Cause(ctx)
	}
	return h.Source.Resolve(ctx, ref, tag)
}

// The egress's lookup budget is derived from the handler's and smaller,
// so when the upstream hangs the last known tag reaches containerd as an
// answer: with the same budget the fallback came exactly when the handler
// gave up on the egress.
func TestLastKnownTagAnswersWithinTheHandlersBudget(t *testing.T) {
	up := newTestUpstream(t)
	c := up.content(1000, 21)
	hanging := &hangingResolve{Source: up.source()}
	const handlerBudget = time.Second
	members := &cluster{}
	n := newNode(t, "a", true, hanging, members, func(cfg *FetcherConfig) {
		cfg.LookupTimeout = LookupBudget(handlerBudget)
		cfg.TagTTL = 0 // always ask the upstream
	})
	members.set(n.member(true))
	hcfg := registry.DefaultConfig()
	hcfg.Sources, hcfg.TagSources = []oci.Source{n.source}, []oci.Source{n.source}
	hcfg.LookupTimeout = handlerBudget
	hcfg.Logger = testLogger()
	mirror := httptest.NewServer(registry.NewHandler(hcfg))
	defer mirror.Close()
	client := &http.Client{Timeout: 30 * time.Second}
	head := func() (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodHead, mirror.URL+"/v2/"+c.Ref.Repository+"/manifests/"+c.Tag+"?ns="+c.Ref.Registry, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Docker-Content-Digest")
	}
	if code, got := head(); code != http.StatusOK || got != c.Manifest.Digest.String() {
		t.Fatalf("upstream up: %d %s, want 200 %s", code, got, c.Manifest.Digest)
	}
	hanging.hang.Store(true)
	if code, got := head(); code != http.StatusOK || got != c.Manifest.Digest.String() {
		t.Fatalf("upstream hangs: %d %q, want the last known 200 %s", code, got, c.Manifest.Digest)
	}
}

func TestLookupBudgetIsUnderTheHandlers(t *testing.T) {
	for _, outer := range []time.Duration{time.Second, registry.DefaultConfig().LookupTimeout, time.Minute} {
		if in := LookupBudget(outer); in <= 0 || in >= outer {
			t.Errorf("LookupBudget(%v) = %v, want within (0, %v)", outer, in, outer)
		}
	}
	if d := DefaultFetcherConfig(); d.LookupTimeout >= registry.DefaultConfig().LookupTimeout {
		t.Errorf("default fetcher lookup %v is not under the handler's %v", d.LookupTimeout, registry.DefaultConfig().LookupTimeout)
	}
}
