package swarm

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"
)

// BenchmarkWarmSpread: one seeder, three downloaders reading a 96 MiB blob
// (three 32 MiB chunks) at once, in one process on loopback. The figure is
// the seeder's upload as a multiple of the blob: 3x is a star, 1x is every
// piece sent by the seeder once and traded after. "capped" limits the
// seeder's upload to 50 MiB/s, a stand-in for a real NIC next to the free
// loopback.
//
//	go test -run '^$' -bench WarmSpread -benchtime 3x ./swarm
func BenchmarkWarmSpread(b *testing.B) {
	const getters = 3
	for _, sc := range []struct {
		name     string
		capBytes int64
	}{
		{"free", 0},
		{"capped", 50 << 20},
	} {
		b.Run(sc.name, func(b *testing.B) {
			var seederUp, fromPeers, total float64
			var wall time.Duration
			for i := range b.N {
				b.StopTimer()
				tr := newTracker()
				content, dgst := randomBlob(b, 96<<20)
				s := startNode(b, tr, "127.0.0.2", "", func(c *Config) { c.UploadLimit = sc.capBytes })
				seed(b, s, tr, content, dgst)
				var nodes []*node
				for g := range getters {
					n := startNode(b, tr, fmt.Sprintf("127.0.0.%d", 3+g), "", nil)
					tr.announcePartial(dgst, n)
					nodes = append(nodes, n)
				}
				b.StartTimer()
				start := time.Now()
				var wg sync.WaitGroup
				errs := make([]error, getters)
				for g, n := range nodes {
					wg.Add(1)
					go func() {
						defer wg.Done()
						got, err := readBlob(b, n, dgst, 0)
						if err == nil && !bytes.Equal(got, content) {
							err = fmt.Errorf("content differs")
						}
						errs[g] = err
					}()
				}
				wg.Wait()
				wall += time.Since(start)
				b.StopTimer()
				for _, err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
				st, _ := lookupStats(s, dgst)
				seederUp += float64(st.UploadedBytes) / float64(len(content))
				for _, n := range nodes {
					st, _ := lookupStats(n, dgst)
					for ip, c := range st.ReceivedFrom {
						total += float64(c)
						if ip != "127.0.0.2" {
							fromPeers += float64(c)
						}
					}
					n.stop()
				}
				s.stop()
				_ = i
				b.StartTimer()
			}
			b.ReportMetric(seederUp/float64(b.N), "seeder-upload-x-blob")
			b.ReportMetric(fromPeers/total, "share-from-peers")
			b.ReportMetric(float64(96<<20)*getters/1e6/(wall.Seconds()/float64(b.N)), "MB/s-total")
		})
	}
}
