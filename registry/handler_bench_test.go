package registry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/dregistry/dregistry/registry/oci"
)

// BenchmarkBlobGET measures blob GETs over loopback HTTP: from a file
// (sendfile), from a ReaderAt without a file, and streamed through the copy
// loop. MB/s is the figure to compare with a direct registry GET.
func BenchmarkBlobGET(b *testing.B) {
	const size = 32 << 20
	data := randomBytes(size, 11)
	for _, mode := range []string{"file", "readerat", "stream"} {
		b.Run(mode, func(b *testing.B) {
			var src oci.Source
			var dgst string
			switch mode {
			case "file", "readerat":
				store := &fakeStore{dir: b.TempDir(), withFile: mode == "file"}
				d := store.put(b, data)
				dgst, src = d.String(), NewLocalSource(store)
			case "stream":
				fs := newFakeSource("stream")
				d := fs.addBlob(oci.Ref{Registry: DefaultConfig().DefaultRegistry, Repository: "bench/blob"}, data)
				dgst, src = d.String(), fs
			}
			srv := httptest.NewServer(NewHandler(Config{
				Sources: []oci.Source{src},
				Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
			}))
			defer srv.Close()
			url := srv.URL + "/v2/bench/blob/blobs/" + dgst
			client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{DisableCompression: true}}
			b.SetBytes(size)
			b.ResetTimer()
			for b.Loop() {
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || n != size {
					b.Fatal(fmt.Errorf("read %d bytes: %w", n, err))
				}
			}
		})
	}
}
