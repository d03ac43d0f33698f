package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/testenv"
)

// Issue 6: after a pull across two nodes, `dregistry swarm stats` (table and
// JSON) lists both members and the torrents, and /metrics moved.
func TestSwarmStatsAndMetricsAfterAPull(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts two nodes")
	}
	testenv.RequireRoot(t)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(3)+":5500")
	img := up.Push(t, testenv.ImageSpec{Repo: "e2e/ops", Tag: "v1", LayerSizes: []int64{24 << 20}, Uncompressed: true})
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 2, Upstream: up, Args: egressFirst(1)})
	n1, n2 := nodes[0], nodes[1]
	layer := img.Layers[0].Digest.String()

	n1.Pull(t, img.Ref)
	waitFor(t, 30*time.Second, n2.Name+" sees "+n1.Name+" seed the layer", func() (bool, string) {
		s := seeders(t, n2, layer)
		return hasSeeder(s, n1.HTTPAddr, true), fmt.Sprint(s)
	})
	n2.Pull(t, img.Ref)

	out, err := n2.Run(t, "swarm", "stats", "--addr", n2.URL(), "--json")
	if err != nil {
		t.Fatalf("swarm stats --json: %v\n%s", err, out)
	}
	var st struct {
		Version int `json:"version"`
		Members []struct {
			Name  string   `json:"name"`
			Roles []string `json:"roles"`
		} `json:"members"`
		Torrents []struct {
			Digest       string           `json:"digest"`
			State        string           `json:"state"`
			Verified     bool             `json:"verified"`
			ReceivedFrom map[string]int64 `json:"receivedFrom"`
		} `json:"torrents"`
		Totals struct {
			ServedBySource map[string]int64 `json:"servedBySource"`
		} `json:"totals"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("swarm stats --json is not the schema: %v\n%s", err, out)
	}
	if st.Version != 1 || len(st.Members) != 2 {
		t.Errorf("stats: version %d, %d members, want 1 and 2: %s", st.Version, len(st.Members), out)
	}
	var found bool
	for _, tr := range st.Torrents {
		if tr.Digest == layer {
			found = true
			if !tr.Verified || tr.State != "seeding" {
				t.Errorf("torrent of the layer: %+v, want verified and seeding", tr)
			}
		}
	}
	if !found {
		t.Errorf("stats list no torrent of %s: %s", layer, out)
	}
	if st.Totals.ServedBySource["swarm"] < img.Layers[0].Size {
		t.Errorf("served from the swarm: %d, want at least %d", st.Totals.ServedBySource["swarm"], img.Layers[0].Size)
	}

	table, err := n2.Run(t, "swarm", "stats", "--addr", n2.URL())
	if err != nil {
		t.Fatalf("swarm stats: %v\n%s", err, table)
	}
	for _, m := range st.Members {
		if !strings.Contains(table, m.Name) {
			t.Errorf("the table lacks member %s:\n%s", m.Name, table)
		}
	}
	if !strings.Contains(table, layer[len("sha256:"):len("sha256:")+12]) {
		t.Errorf("the table lacks the layer's torrent %s:\n%s", layer, table)
	}
	t.Logf("dregistry swarm stats on %s:\n%s", n2.Name, table)

	_, metrics := get(t, n2.URL()+"/metrics")
	for _, m := range []string{
		`dregistry_requests_total{code="200",route="blob"}`,
		`dregistry_served_bytes_total{source="swarm"}`,
		`dregistry_gossip_members`,
		`dregistry_active_torrents{state="seeding"}`,
	} {
		if v := metricValue(metrics, m); v <= 0 {
			t.Errorf("/metrics: %s = %v, want > 0", m, v)
		}
	}
}

// metricValue finds one sample in a Prometheus text exposition.
func metricValue(text, series string) float64 {
	re := regexp.MustCompile("(?m)^" + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`)
	m := re.FindStringSubmatch(text)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}
