package testenv

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestFabricJoinsHostsThroughCappedPortsAndCountsTheirBytes(t *testing.T) {
	if testing.Short() {
		t.Skip("creates network namespaces")
	}
	busybox := RequireBinary(t, "busybox")
	f := NewFabric(t, "ft")
	up := f.Attach(t, "up", 2, 100_000_000)
	a := f.Attach(t, "a", 11, 100_000_000)
	reg := StartRegistryIn(t, up.Netns, up.Addr+":5500")
	if err := up.Unlimit(); err != nil {
		t.Fatal(err)
	}
	img := PushImage(t, reg, "testenv/fabric", "v1", 4<<20)
	if err := up.Limit(100_000_000); err != nil {
		t.Fatal(err)
	}

	// Both ends of every port are shaped.
	for _, p := range []*Port{up, a} {
		for _, end := range []struct {
			ns   *Netns
			name string
		}{{f.Bridge, p.Link.AName}, {p.Netns, p.Link.BName}} {
			out, err := end.ns.Exec("tc", "qdisc", "show", "dev", end.name)
			if err != nil || !strings.Contains(out, "tbf") || !strings.Contains(out, "100Mbit") {
				t.Errorf("%s: qdisc of %s: %q, %v; want tbf at 100Mbit", p.Name, end.name, out, err)
			}
		}
	}

	// The test reaches a host; a host reaches another over the bridge.
	layer := img.Layers[0]
	blobURL := reg.URL() + "/v2/testenv/fabric/blobs/" + layer.Digest.String()
	if status, err := headStatus(blobURL, 5*time.Second); err != nil || status != http.StatusOK {
		t.Fatalf("HEAD from the test: %d, %v", status, err)
	}
	beforeA, err := a.Counters()
	if err != nil {
		t.Fatal(err)
	}
	beforeUp, err := up.Counters()
	if err != nil {
		t.Fatal(err)
	}
	lostBefore, err := up.Losses()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := a.Netns.Exec("timeout", "60", busybox, "wget", "-q", "-O", "/dev/null", blobURL); err != nil {
		t.Fatalf("wget from host a: %v: %s", err, out)
	}
	afterA, err := a.Counters()
	if err != nil {
		t.Fatal(err)
	}
	afterUp, err := up.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if got := afterA.Sub(beforeA).Rx; got < layer.Size {
		t.Errorf("host a received %d bytes for a %d-byte blob", got, layer.Size)
	}
	if got := afterUp.Sub(beforeUp).Tx; got < layer.Size {
		t.Errorf("the upstream sent %d bytes for a %d-byte blob", got, layer.Size)
	}
	lostAfter, err := up.Losses()
	if err != nil {
		t.Fatal(err)
	}
	if d := lostAfter.Sub(lostBefore); d.TxDrops < 0 || d.RxDrops < 0 || d.Retrans < 0 {
		t.Errorf("the upstream's losses went down: %+v -> %+v", lostBefore, lostAfter)
	}
}

func TestTCPCounterReadsProcNetSNMP(t *testing.T) {
	const snmp = `Ip: Forwarding DefaultTTL
Ip: 1 64
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 43 35 0 45 0 21955 224127 20374 0 51 0
Udp: InDatagrams
Udp: 7
`
	if got, err := tcpCounter(snmp, "RetransSegs"); err != nil || got != 20374 {
		t.Errorf("RetransSegs = %d, %v; want 20374", got, err)
	}
	if got, err := tcpCounter(snmp, "OutSegs"); err != nil || got != 224127 {
		t.Errorf("OutSegs = %d, %v; want 224127", got, err)
	}
	for name, bad := range map[string]string{
		"no Tcp lines":    "Ip: Forwarding\nIp: 1\n",
		"a missing value": "Tcp: InSegs RetransSegs\nTcp: 5\n",
		"no such counter": "Tcp: InSegs OutSegs\nTcp: 5 6\n",
		"not a number":    "Tcp: RetransSegs\nTcp: many\n",
	} {
		if got, err := tcpCounter(bad, "RetransSegs"); err == nil {
			t.Errorf("%s: %d, nil; want an error", name, got)
		}
	}
}
