package egress

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dregistry/dregistry/registry/oci"
)

// BenchmarkColdFanOut: nodes pull one new blob at once through an upstream
// link of linkMBps, (a) each straight from the upstream and (b) through the
// egress owner. Reported: seconds until all finished and upstream bytes per
// blob byte, for both, beside one node pulling alone straight from the
// upstream (the wall time the egress should approach).
//
//	go test -run - -bench ColdFanOut -benchtime 3x ./internal/egress/
func BenchmarkColdFanOut(b *testing.B) {
	const (
		nodes    = 4
		blobSize = 32 << 20
		linkMBps = 200
	)
	up := newTestUpstream(b)
	up.link = &link{bytesPerSec: linkMBps << 20}
	members := &cluster{}
	owner := newNode(b, "owner", true, up.source(), members, nil)
	list := []Member{owner.member(true)}
	var plain []*node
	for i := range nodes {
		n := newNode(b, fmt.Sprintf("n%d", i), false, &forbiddenUpstream{}, members, nil)
		plain = append(plain, n)
		list = append(list, n.member(false))
	}
	members.set(list...)
	direct := up.source()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	var oneSecs, directSecs, egressSecs, directRatio, egressRatio float64
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		c := up.content(blobSize, uint64(1000+i))
		b.StartTimer()
		getDirect := func(int) (oci.Blob, error) { return direct.Blob(ctx, c.Ref, c.BlobDigest()) }
		secs, _ := fanOut(b, ctx, up, c.Blob, getDirect, 1)
		oneSecs += secs
		secs, ratio := fanOut(b, ctx, up, c.Blob, getDirect, nodes)
		directSecs += secs
		directRatio += ratio
		secs, ratio = fanOut(b, ctx, up, c.Blob, func(k int) (oci.Blob, error) {
			return plain[k].source.Blob(ctx, c.Ref, c.BlobDigest())
		}, nodes)
		egressSecs += secs
		egressRatio += ratio
		if err := owner.fetcher.Release(c.BlobDigest()); err != nil {
			b.Fatal(err)
		}
	}
	n := float64(b.N)
	b.ReportMetric(oneSecs/n, "one-node-direct-s")
	b.ReportMetric(directSecs/n, "direct-s")
	b.ReportMetric(egressSecs/n, "egress-s")
	b.ReportMetric(directRatio/n, "direct-upstream-x")
	b.ReportMetric(egressRatio/n, "egress-upstream-x")
}

// fanOut runs get+read on nodes goroutines at once; it returns the wall
// time and the upstream bytes sent per blob byte.
func fanOut(b *testing.B, ctx context.Context, up *testUpstream, want []byte, get func(int) (oci.Blob, error), nodes int) (float64, float64) {
	up.mu.Lock()
	before := up.sent
	up.mu.Unlock()
	start := time.Now()
	var wg sync.WaitGroup
	for k := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			blob, err := get(k)
			if err != nil {
				b.Error(err)
				return
			}
			defer blob.Close()
			got, err := readAllAt(ctx, blob, 0)
			if err != nil || !bytes.Equal(got, want) {
				b.Errorf("node %d: %d bytes, %v", k, len(got), err)
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	up.mu.Lock()
	sent := up.sent - before
	up.mu.Unlock()
	return secs, float64(sent) / float64(len(want))
}
