package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// DefaultQueue is how long tbf lets packets wait before it drops them
// (its latency): a deep FIFO, as a NIC without a fair-queuing qdisc has.
const DefaultQueue = 100 * time.Millisecond

// Limit caps the rate at which end a (true) or b (false) of the link sends,
// in bits per second, with a tbf qdisc holding DefaultQueue: the other
// direction stays free.
func (l *Link) Limit(a bool, bitsPerSecond int64) error {
	return l.LimitQueue(a, bitsPerSecond, DefaultQueue)
}

// LimitQueue is Limit with a queue of the given length (tbf's latency).
func (l *Link) LimitQueue(a bool, bitsPerSecond int64, queue time.Duration) error {
	if bitsPerSecond <= 0 {
		return fmt.Errorf("testenv: link rate %d bit/s must be positive", bitsPerSecond)
	}
	if queue < time.Millisecond {
		return fmt.Errorf("testenv: tbf queue %s must be at least 1ms", queue)
	}
	ns, name := l.B, l.BName
	if a {
		ns, name = l.A, l.AName
	}
	// A burst of 10 ms at the rate (at least 64 KiB) lets tbf pass the
	// veth's large GSO packets without turning the cap into a stall.
	burst := max(bitsPerSecond/8/100, 64<<10)
	args := []string{"qdisc", "replace", "dev", name, "root", "tbf",
		"rate", strconv.FormatInt(bitsPerSecond, 10) + "bit",
		"burst", strconv.FormatInt(burst, 10) + "b", "latency", strconv.FormatInt(queue.Milliseconds(), 10) + "ms"}
	if ns == nil {
		return runTC(args...)
	}
	_, err := ns.Exec(append([]string{"tc"}, args...)...)
	return err
}

// LinkSubnet is a /24 of the benchmarking range private to this test
// process ("198.19.<n>"; netns_test.go takes 198.18.0.0/16): address hosts
// as LinkSubnet()+".1". Tests of one process run one after the other, so
// each may reuse it once the previous test's links are gone.
func LinkSubnet() string { return fmt.Sprintf("198.19.%d", os.Getpid()%256) }

// StartShapedRegistry starts a registry in a new namespace behind a veth
// pair whose registry end sends at most bitsPerSecond: the upstream's
// answers (blobs, manifests) cross a capped link, as a cluster's shared
// uplink would; pushes from the test go the other way, uncapped. The
// registry listens on LinkSubnet()+".2:5500"; the test's end is ".1".
func StartShapedRegistry(t testing.TB, id string, bitsPerSecond int64) (*Registry, *Link) {
	t.Helper()
	RequireBinary(t, "tc")
	ns := NewNetns(t, "up"+id)
	sub := LinkSubnet()
	link := NewLink(t, id, nil, sub+".1/24", ns, sub+".2/24")
	if err := link.Limit(false, bitsPerSecond); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return StartRegistryIn(t, ns, sub+".2:5500"), link
}

// runTC runs tc in the test's own namespace, bounded like `ip`.
func runTC(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "tc", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("tc %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
