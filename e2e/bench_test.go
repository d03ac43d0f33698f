package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/testenv"
)

const (
	// benchBlobSize is the random file in the warm benchmarks' one layer.
	benchBlobSize = 1 << 30
	// coldBlobSize is smaller: every iteration of the cold benchmark pushes a
	// new blob, so that neither containerd nor dregistry holds it.
	coldBlobSize = 256 << 20
	// benchGetTimeout bounds one GET of a benchmark blob.
	benchGetTimeout = 5 * time.Minute
)

// BenchmarkBlobGET compares a GET of one large blob from docker-registry
// (direct) with the same blob through dregistry once containerd holds it
// (dregistry-local), and a blob that only the upstream has, which dregistry
// streams through while checking its digest (dregistry-cold). MB/s is the
// figure; docs/benchmarks.md records the medians.
func BenchmarkBlobGET(b *testing.B) {
	testenv.RequireRoot(b)
	up := testenv.StartRegistry(b, testenv.LoopbackIP(8)+":5500")
	node := testenv.StartNode(b, testenv.NodeConfig{Name: "bench", IP: testenv.LoopbackIP(31), Upstream: up})
	img := up.Push(b, testenv.ImageSpec{Repo: "bench/large", Tag: "v1", LayerSizes: []int64{benchBlobSize}, Uncompressed: true})
	layer := img.Layers[0]
	node.Pull(b, img.Ref)
	path := "/v2/" + img.Repo + "/blobs/" + layer.Digest.String()
	ns := "?ns=" + up.Addr
	// Each source is checked once, untimed, for the right bytes.
	checkBlobDigest(b, up.URL()+path, layer)
	checkBlobDigest(b, node.URL()+path+ns, layer)

	b.Run("direct", func(b *testing.B) {
		benchGET(b, up.URL()+path, layer.Size)
	})
	b.Run("dregistry-local", func(b *testing.B) {
		benchGET(b, node.URL()+path+ns, layer.Size)
	})
	b.Run("dregistry-cold", func(b *testing.B) {
		b.SetBytes(0)
		var total int64
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			cold := up.Push(b, testenv.ImageSpec{Repo: "bench/cold", Tag: "v" + strconv.Itoa(i), LayerSizes: []int64{coldBlobSize}, Uncompressed: true})
			url := node.URL() + "/v2/bench/cold/blobs/" + cold.Layers[0].Digest.String() + ns
			b.StartTimer()
			total += getAll(b, url, cold.Layers[0].Size)
		}
		b.ReportMetric(float64(total)/1e6/b.Elapsed().Seconds(), "MB/s")
	})
}

// benchGET times b.N whole GETs of url.
func benchGET(b *testing.B, url string, size int64) {
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		getAll(b, url, size)
	}
}

// getAll reads url's body to the end with a large buffer, as containerd's
// content writer does, and fails unless exactly size bytes came.
func getAll(b *testing.B, url string, size int64) int64 {
	resp, cancel := benchOpen(b, url)
	defer cancel()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		m, err := resp.Body.Read(buf)
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatalf("GET %s: after %d bytes: %v", url, n, err)
		}
	}
	if n != size {
		b.Fatalf("GET %s: %d bytes, want %d", url, n, size)
	}
	return n
}

// benchOpen GETs url, fails the benchmark unless it answers 200, and returns
// the response with a func that closes it and ends its deadline.
func benchOpen(b *testing.B, url string) (*http.Response, func()) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), benchGetTimeout)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: benchGetTimeout}).Do(req)
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		b.Fatalf("GET %s: %s", url, resp.Status)
	}
	return resp, func() { resp.Body.Close(); cancel() }
}

// checkBlobDigest fails the benchmark unless url serves exactly blob.
func checkBlobDigest(b *testing.B, url string, blob testenv.Blob) {
	b.Helper()
	resp, cancel := benchOpen(b, url)
	defer cancel()
	v := blob.Digest.Verifier()
	n, err := io.Copy(v, resp.Body)
	if err != nil || n != blob.Size || !v.Verified() {
		b.Fatal(fmt.Errorf("GET %s: %d bytes (want %d), verified %v, err %v", url, n, blob.Size, v.Verified(), err))
	}
}
