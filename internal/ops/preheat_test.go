package ops

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestStatsListRunningPreheats: the stats carry the preheats the daemon
// reports, and an empty list (not null) when there are none.
func TestStatsListRunningPreheats(t *testing.T) {
	s, c, tr := newTestServer(t)
	if raw, _ := json.Marshal(s.snapshot()); !json.Valid(raw) || !strings.Contains(string(raw), `"preheats":[]`) {
		t.Errorf("stats without preheats: %s, want \"preheats\":[]", raw)
	}
	running := []PreheatStats{{Image: "docker.io/library/busybox:1.36", Digest: "sha256:abc", Namespace: "k8s.io", DoneBytes: 10, TotalBytes: 40}}
	s, err := New(Config{Node: "node3", Cluster: c, Torrents: tr, Gate: keylessGate(c), Preheats: func() []PreheatStats { return running }})
	if err != nil {
		t.Fatal(err)
	}
	got := s.snapshot().Preheats
	if len(got) != 1 || got[0] != running[0] {
		t.Errorf("preheats %+v, want %+v", got, running)
	}
}
