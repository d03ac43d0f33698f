package diskcache

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// gathered returns each metric of c by name, as a registry gathers it.
func gathered(t *testing.T, c *Cache) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch {
			case m.GetGauge() != nil:
				out[f.GetName()] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				out[f.GetName()] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

func TestMetrics(t *testing.T) {
	c := newCache(t, 100)
	var log evictLog
	mustAdmit(t, c, &log, "a", 60).Unpin()
	mustAdmit(t, c, &log, "b", 50)
	got := gathered(t, c)
	want := map[string]float64{"dregistry_cache_size_bytes": 50, "dregistry_cache_limit_bytes": 100, "dregistry_cache_evictions_total": 1}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("%s = %v, want %v (all: %v)", name, got[name], v, got)
		}
	}
}
