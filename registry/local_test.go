package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/registry/oci"
)

// fakeStore stands in for the containerd package (tested against a real
// containerd there): blobs in files of a temp dir, images in a map.
type fakeStore struct {
	dir      string
	withFile bool // readers expose File(), as a readable content dir does
	images   map[string]ocispec.Descriptor
	asked    []string
}

func newFakeStore(t testing.TB, withFile bool) *fakeStore {
	return &fakeStore{dir: t.TempDir(), withFile: withFile, images: map[string]ocispec.Descriptor{}}
}

func (s *fakeStore) put(t testing.TB, data []byte) digest.Digest {
	d := digest.FromBytes(data)
	if err := os.WriteFile(filepath.Join(s.dir, d.Encoded()), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return d
}

func (s *fakeStore) ReaderAt(_ context.Context, dgst digest.Digest) (content.ReaderAt, error) {
	f, err := os.Open(filepath.Join(s.dir, dgst.Encoded()))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("content %s: %w", dgst, oci.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	r := &fileReaderAt{f: f, size: fi.Size()}
	if s.withFile {
		return fileBacked{r}, nil
	}
	return r, nil
}

func (s *fakeStore) ImageTarget(_ context.Context, name string) (ocispec.Descriptor, error) {
	s.asked = append(s.asked, name)
	d, ok := s.images[name]
	if !ok {
		return d, fmt.Errorf("image %s: %w", name, oci.ErrNotFound)
	}
	return d, nil
}

type fileReaderAt struct {
	f    *os.File
	size int64
}

func (r *fileReaderAt) ReadAt(p []byte, off int64) (int, error) { return r.f.ReadAt(p, off) }
func (r *fileReaderAt) Size() int64                             { return r.size }
func (r *fileReaderAt) Close() error                            { return r.f.Close() }

type fileBacked struct{ *fileReaderAt }

func (r fileBacked) File() *os.File { return r.f }

func TestLocalSourceBlobs(t *testing.T) {
	for _, withFile := range []bool{true, false} {
		t.Run(fmt.Sprintf("file=%v", withFile), func(t *testing.T) {
			store := newFakeStore(t, withFile)
			data := randomBytes(3<<20+5, 3)
			d := store.put(t, data)
			src := NewLocalSource(store)
			ref := oci.Ref{Registry: "docker.io", Repository: "library/alpine"}
			b, err := src.Blob(context.Background(), ref, d)
			if err != nil {
				t.Fatal(err)
			}
			sb, ok := b.(oci.SeekableBlob)
			if !ok {
				t.Fatal("local blob is not seekable")
			}
			if _, isFile := sb.ReadSeeker().(*os.File); isFile != withFile {
				t.Errorf("ReadSeeker is %T; want a file: %v", sb.ReadSeeker(), withFile)
			}
			rc, err := b.Open(context.Background(), 1000)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			if err != nil || !bytes.Equal(got, data[1000:]) {
				t.Fatalf("Open(1000): %d bytes, %v", len(got), err)
			}
			if _, err := b.Open(context.Background(), int64(len(data))+1); err == nil {
				t.Error("Open past the end succeeded")
			}
			_ = b.Close()
			if _, err := src.Blob(context.Background(), ref, digest.FromString("missing")); !errors.Is(err, oci.ErrNotFound) {
				t.Errorf("missing blob: %v", err)
			}

			// Through the handler: whole, ranged, and unsatisfiable.
			srv := httptest.NewServer(NewHandler(Config{Sources: []oci.Source{src}, Logger: testLogger(t)}))
			t.Cleanup(srv.Close)
			url := srv.URL + "/v2/library/alpine/blobs/" + d.String()
			resp, body, err := doRequest(t, "GET", url, nil)
			if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, data) {
				t.Fatalf("GET: %v %v", err, resp)
			}
			resp, body, err = doRequest(t, "GET", url, http.Header{"Range": {"bytes=10-19"}})
			if err != nil || resp.StatusCode != 206 || !bytes.Equal(body, data[10:20]) ||
				resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 10-19/%d", len(data)) {
				t.Fatalf("GET range: %v %v", err, resp)
			}
			resp, _, err = doRequest(t, "GET", url, http.Header{"Range": {fmt.Sprintf("bytes=%d-", len(data))}})
			if err != nil || resp.StatusCode != 416 || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes */%d", len(data)) {
				t.Fatalf("GET 416: %v %v", err, resp)
			}
		})
	}
}

func TestLocalSourceManifests(t *testing.T) {
	store := newFakeStore(t, true)
	src := NewLocalSource(store)
	ref := oci.Ref{Registry: "docker.io", Repository: "library/alpine"}
	for _, tc := range []struct {
		name    string
		content []byte
		want    string // "" = refused
	}{
		{"docker manifest", []byte(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{},"layers":[]}`), oci.MediaTypeDockerManifest},
		{"docker list", []byte(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}`), oci.MediaTypeDockerManifestList},
		{"OCI index without mediaType", []byte(`{"schemaVersion":2,"manifests":[{"digest":"sha256:` + sha256Hex + `"}]}`), ocispec.MediaTypeImageIndex},
		{"OCI manifest without mediaType", []byte(`{"schemaVersion":2,"config":{"size":1},"layers":[]}`), ocispec.MediaTypeImageManifest},
		{"image config", []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`), ""},
		{"config only", []byte(`{"config":{}}`), ""},
		{"foreign mediaType", []byte(`{"mediaType":"application/vnd.oci.image.config.v1+json","config":{},"layers":[]}`), ""},
		{"layer bytes", randomBytes(1000, 4), ""},
		{"too large", append([]byte(`{"manifests":[]}`), bytes.Repeat([]byte(" "), oci.MaxManifestSize)...), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := store.put(t, tc.content)
			m, err := src.Manifest(context.Background(), ref, d)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("served %q as a manifest of type %s", tc.content[:min(40, len(tc.content))], m.MediaType)
				}
				return
			}
			if err != nil || m.MediaType != tc.want || m.Digest != d || !bytes.Equal(m.Content, tc.content) {
				t.Fatalf("Manifest = %+v, %v", m, err)
			}
		})
	}
	t.Run("store content does not match its digest", func(t *testing.T) {
		good := []byte(`{"manifests":[]}`)
		d := digest.FromBytes(good)
		if err := os.WriteFile(filepath.Join(store.dir, d.Encoded()), []byte(`{"manifests":[1]}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := src.Manifest(context.Background(), ref, d); err == nil || !strings.Contains(err.Error(), "hashes to") {
			t.Fatalf("corrupt manifest: %v", err)
		}
	})
	if _, err := src.Manifest(context.Background(), ref, digest.FromString("missing")); !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("missing manifest: %v", err)
	}
}

func TestLocalSourceResolvesFromImageStore(t *testing.T) {
	store := newFakeStore(t, false)
	want := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromString("x"), Size: 1}
	store.images["docker.io/library/alpine:3.20"] = want
	src := NewLocalSource(store)
	got, err := src.Resolve(context.Background(), oci.Ref{Registry: "docker.io", Repository: "library/alpine"}, "3.20")
	if err != nil || got.Digest != want.Digest {
		t.Fatalf("Resolve = %+v, %v", got, err)
	}
	_, err = src.Resolve(context.Background(), oci.Ref{Registry: "127.0.0.1:5000", Repository: "a/b"}, "v1")
	if !errors.Is(err, oci.ErrNotFound) || store.asked[1] != "127.0.0.1:5000/a/b:v1" {
		t.Fatalf("Resolve of a missing image: %v, asked %q", err, store.asked)
	}
}
