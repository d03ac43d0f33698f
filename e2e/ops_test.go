package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
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
			Name    string   `json:"name"`
			Address string   `json:"address"`
			Roles   []string `json:"roles"`
		} `json:"members"`
		Torrents []adminTorrent `json:"torrents"`
		Totals   adminTotals    `json:"totals"`
		Peers    []adminPeer    `json:"peers"`
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
	// Peers are named as members: n1's name is its gossip address's.
	var member1, member2 string
	for _, m := range st.Members {
		switch m.Address {
		case n1.GossipAddr:
			member1 = m.Name
		case n2.GossipAddr:
			member2 = m.Name
		}
	}
	if p := peerNamed(st.Peers, member1); p.Downloaded < img.Layers[0].Size {
		t.Errorf("%s's traffic with %s (%s): %+v, want the layer downloaded: %s", n2.Name, n1.Name, member1, p, out)
	}
	// The status page's history: within a sample (2 s) the pull shows as
	// bytes per second served from the swarm and received from n1.
	waitFor(t, 10*time.Second, n2.Name+"'s traffic history to show the pull", func() (bool, string) {
		var tr struct {
			Samples []struct {
				Seconds float64            `json:"seconds"`
				Served  map[string]float64 `json:"servedBytesPerSecond"`
				Peers   map[string]struct {
					Down float64 `json:"downBytesPerSecond"`
				} `json:"peers"`
			} `json:"samples"`
		}
		if err := adminGet(n2, "/admin/v1/traffic", &tr); err != nil {
			t.Fatal(err)
		}
		var served, down float64
		for _, smp := range tr.Samples {
			served += smp.Served["swarm"] * smp.Seconds
			down += smp.Peers[member1].Down * smp.Seconds
		}
		size := float64(img.Layers[0].Size)
		return served >= size*0.999 && down >= size*0.999, fmt.Sprintf("%d samples: %.0f bytes served from the swarm, %.0f received from %s", len(tr.Samples), served, down, member1)
	})

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
	if !strings.Contains(table, "24.0 MiB") || !strings.Contains(table, "PEER") {
		t.Errorf("the table lacks the layer's size in MiB or the peers:\n%s", table)
	}
	t.Logf("dregistry swarm stats on %s:\n%s", n2.Name, table)

	// n2 got the layer from the swarm: it downloaded, and its pulls took time.
	size := float64(img.Layers[0].Size)
	metrics := scrape(t, n2)
	for _, m := range []struct {
		series string
		min    float64
	}{
		{`dregistry_requests_total{code="200",route="blob"}`, 1},
		{`dregistry_served_bytes_total{source="swarm"}`, size},
		{`dregistry_gossip_members`, 2},
		{`dregistry_active_torrents{state="seeding"}`, 1},
		{`dregistry_swarm_downloaded_bytes_total`, size},
		{`dregistry_pull_duration_seconds_count{source="swarm"}`, 1},
		{`dregistry_pull_duration_seconds_sum{source="swarm"}`, 1e-9},
		// n2 heard n1 announce the layer, then announced its own copy.
		{`dregistry_gossip_announcements_total{direction="received"}`, 1},
		{`dregistry_gossip_announcements_total{direction="sent"}`, 1},
	} {
		if v := metricValue(metrics, m.series); v < m.min {
			t.Errorf("%s /metrics: %s = %v, want at least %v", n2.Name, m.series, v, m.min)
		}
	}
	// The egress fetched from the upstream; n2 only asked the egress.
	if v := metricValue(metrics, `dregistry_upstream_bytes_total`); v != 0 {
		t.Errorf("%s fetched %v bytes from the upstream, want 0 (the egress fetches)", n2.Name, v)
	}
	if st.Totals.SwarmDownloadedTotal < img.Layers[0].Size || st.Totals.ShareRatio == nil {
		t.Errorf("%s totals %+v: want the layer downloaded and a share ratio", n2.Name, st.Totals)
	}

	// n1 seeded the layer to n2: uploaded bytes on the seeder, per digest
	// and in total, and its share ratio has no downloads to divide by.
	metrics = scrape(t, n1)
	for _, m := range []struct {
		series string
		min    float64
	}{
		{`dregistry_swarm_uploaded_bytes_total`, size},
		{`dregistry_upstream_bytes_total`, size},
		{`dregistry_gossip_announcements_total{direction="sent"}`, 1},
	} {
		if v := metricValue(metrics, m.series); v < m.min {
			t.Errorf("%s /metrics: %s = %v, want at least %v", n1.Name, m.series, v, m.min)
		}
	}
	out, err = n1.Run(t, "swarm", "stats", "--addr", n1.URL(), "--json")
	if err != nil {
		t.Fatalf("swarm stats --json on %s: %v\n%s", n1.Name, err, out)
	}
	var seeder struct {
		Torrents []adminTorrent `json:"torrents"`
		Totals   adminTotals    `json:"totals"`
		Peers    []adminPeer    `json:"peers"`
	}
	if err := json.Unmarshal([]byte(out), &seeder); err != nil {
		t.Fatalf("swarm stats --json on %s: %v\n%s", n1.Name, err, out)
	}
	if seeder.Totals.SwarmUploaded < img.Layers[0].Size || seeder.Totals.ShareRatio != nil {
		t.Errorf("%s totals %+v: want the layer uploaded and no share ratio", n1.Name, seeder.Totals)
	}
	var uploaded int64
	for _, tr := range seeder.Torrents {
		if tr.Digest == layer {
			uploaded = tr.Uploaded
		}
	}
	if uploaded < img.Layers[0].Size {
		t.Errorf("%s uploaded %d bytes of the layer, want at least %d: %s", n1.Name, uploaded, img.Layers[0].Size, out)
	}
	if p := peerNamed(seeder.Peers, member2); p.Uploaded < img.Layers[0].Size {
		t.Errorf("%s's traffic with %s (%s): %+v, want the layer uploaded: %s", n1.Name, n2.Name, member2, p, out)
	}
	table, err = n1.Run(t, "swarm", "stats", "--addr", n1.URL())
	if err != nil || !strings.Contains(table, "share ratio - (nothing downloaded)") {
		t.Errorf("swarm stats on %s: %v\n%s", n1.Name, err, table)
	}
	t.Logf("dregistry swarm stats on %s:\n%s", n1.Name, table)
}

// adminTorrent and adminTotals are the parts of /admin/v1/stats checked
// here, decoded as a client of the documented schema would.
type adminTorrent struct {
	Digest       string           `json:"digest"`
	State        string           `json:"state"`
	Verified     bool             `json:"verified"`
	ReceivedFrom map[string]int64 `json:"receivedFrom"`
	Uploaded     int64            `json:"uploadedBytes"`
}

type adminTotals struct {
	ServedBySource       map[string]int64 `json:"servedBySource"`
	SwarmUploaded        int64            `json:"swarmUploadedBytes"`
	SwarmDownloadedTotal int64            `json:"swarmDownloadedTotalBytes"`
	ShareRatio           *float64         `json:"shareRatio"`
}

type adminPeer struct {
	Name       string `json:"name"`
	Uploaded   int64  `json:"uploadedBytes"`
	Downloaded int64  `json:"downloadedBytes"`
}

func peerNamed(peers []adminPeer, name string) adminPeer {
	for _, p := range peers {
		if p.Name == name {
			return p
		}
	}
	return adminPeer{}
}

// scrape reads a node's whole /metrics exposition.
func scrape(t *testing.T, n *testenv.Node) string {
	t.Helper()
	r, err := getURL(n.URL() + "/metrics")
	if err != nil || r.Status != http.StatusOK {
		t.Fatalf("%s /metrics: %d, %v", n.Name, r.Status, err)
	}
	return string(r.Body)
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
