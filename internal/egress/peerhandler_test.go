package egress

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dregistry/dregistry/registry/oci"
)

func peerRequest(t *testing.T, method, rawURL string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), method, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestPeerHandler(t *testing.T) {
	up := newTestUpstream(t)
	c := up.content(200<<10+7, 11)
	size := len(c.Blob)
	tn := newTwoNodes(t, up)
	q := "?" + url.Values{"ns": {c.Ref.Registry}, "repo": {c.Ref.Repository}}.Encode()
	owner := tn.a.srv.URL
	noFwd := map[string]string{oci.NoForwardHeader: "1"}
	blob := owner + blobsPath + c.BlobDigest().String() + q

	for _, tc := range []struct {
		name       string
		method     string
		url        string
		header     map[string]string
		wantStatus int
		wantBody   []byte
		wantRange  string
	}{
		{"blob", "GET", blob, noFwd, 200, c.Blob, ""},
		{"blob range", "GET", blob, map[string]string{oci.NoForwardHeader: "1", "Range": "bytes=10-99"}, 206, c.Blob[10:100], fmt.Sprintf("bytes 10-99/%d", size)},
		{"blob open range", "GET", blob, map[string]string{oci.NoForwardHeader: "1", "Range": fmt.Sprintf("bytes=%d-", size-5)}, 206, c.Blob[size-5:], fmt.Sprintf("bytes %d-%d/%d", size-5, size-1, size)},
		{"blob range past the end", "GET", blob, map[string]string{oci.NoForwardHeader: "1", "Range": fmt.Sprintf("bytes=%d-", size)}, 416, nil, ""},
		{"blob head", "HEAD", blob, noFwd, 200, []byte{}, ""},
		{"manifest", "GET", owner + manifestsPath + c.Manifest.Digest.String() + q, noFwd, 200, c.Manifest.Content, ""},
		{"tag", "GET", owner + tagsPath + c.Tag + q, noFwd, 200, nil, ""},
		{"unknown blob", "GET", owner + blobsPath + "sha256:" + strings.Repeat("0", 64) + q, noFwd, 404, nil, ""},
		{"unknown tag", "GET", owner + tagsPath + "nope" + q, noFwd, 404, nil, ""},
		{"no forwarding header", "GET", blob, nil, 400, nil, ""},
		{"write", "PUT", blob, noFwd, 405, nil, ""},
		{"bad digest", "GET", owner + blobsPath + "sha256:xyz" + q, noFwd, 400, nil, ""},
		{"bad tag", "GET", owner + tagsPath + "-x" + q, noFwd, 400, nil, ""},
		{"no ns", "GET", owner + blobsPath + c.BlobDigest().String() + "?repo=test/app", noFwd, 400, nil, ""},
		{"bad repository", "GET", owner + blobsPath + c.BlobDigest().String() + "?ns=" + c.Ref.Registry + "&repo=UPPER", noFwd, 400, nil, ""},
		{"unknown kind", "GET", owner + PeerPathPrefix + "other/x" + q, noFwd, 404, nil, ""},
		{"not a candidate", "GET", tn.b.srv.URL + blobsPath + c.BlobDigest().String() + q, noFwd, 503, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := peerRequest(t, tc.method, tc.url, tc.header)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.wantStatus, body)
			}
			if tc.wantBody != nil && !bytes.Equal(body, tc.wantBody) {
				t.Errorf("body of %d bytes, want %d", len(body), len(tc.wantBody))
			}
			if got := resp.Header.Get("Content-Range"); tc.wantRange != "" && got != tc.wantRange {
				t.Errorf("Content-Range %q, want %q", got, tc.wantRange)
			}
			if tc.method == "HEAD" && resp.ContentLength != int64(size) {
				t.Errorf("HEAD Content-Length %d, want %d", resp.ContentLength, size)
			}
		})
	}
	if n := up.gets(c.BlobDigest()); n != 1 {
		t.Errorf("upstream saw %d GETs, want 1", n)
	}
	for _, a := range up.auth {
		t.Errorf("upstream received Authorization %q", a)
	}
}

// Range while the blob is still downloading, from the growing spool.
func TestPeerHandlerRangeWhileDownloading(t *testing.T) {
	up := newTestUpstream(t)
	c := up.content(1<<20, 12)
	release := up.hold(int64(len(c.Blob)) / 2)
	defer release()
	tn := newTwoNodes(t, up)
	q := "?" + url.Values{"ns": {c.Ref.Registry}, "repo": {c.Ref.Repository}}.Encode()
	resp, body := peerRequest(t, "GET", tn.a.srv.URL+blobsPath+c.BlobDigest().String()+q,
		map[string]string{oci.NoForwardHeader: "1", "Range": "bytes=1000-4999", "Authorization": "Bearer secret"})
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, c.Blob[1000:5000]) {
		t.Errorf("status %d, %d bytes; want 206 with blob[1000:5000]", resp.StatusCode, len(body))
	}
	if want := fmt.Sprintf("bytes 1000-4999/%d", len(c.Blob)); resp.Header.Get("Content-Range") != want {
		t.Errorf("Content-Range %q, want %q", resp.Header.Get("Content-Range"), want)
	}
	release()
	for _, a := range up.auth {
		t.Errorf("upstream received Authorization %q", a)
	}
}

func TestPeerHandlerRefusesNonMembers(t *testing.T) {
	up := newTestUpstream(t)
	c := up.content(1000, 13)
	tn := newTwoNodes(t, up)
	tn.members.mu.Lock()
	tn.members.outsider = true
	tn.members.mu.Unlock()
	q := "?" + url.Values{"ns": {c.Ref.Registry}, "repo": {c.Ref.Repository}}.Encode()
	resp, _ := peerRequest(t, "GET", tn.a.srv.URL+blobsPath+c.BlobDigest().String()+q, map[string]string{oci.NoForwardHeader: "1"})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("status %d, want 403", resp.StatusCode)
	}
	if n := up.gets(c.BlobDigest()); n != 0 {
		t.Errorf("upstream saw %d GETs for a non-member", n)
	}
}

func TestBlobRange(t *testing.T) {
	for _, tc := range []struct {
		header                string
		size                  int64
		wantStart, wantLength int64
		wantStatus            int
	}{
		{"", 100, 0, 100, 200},
		{"bytes=0-", 100, 0, 100, 206},
		{"bytes=10-19", 100, 10, 10, 206},
		{"bytes=90-200", 100, 90, 10, 206},
		{"bytes=-10", 100, 90, 10, 206},
		{"bytes=-200", 100, 0, 100, 206},
		{"bytes=100-", 100, 0, 0, 416},
		{"bytes=5-1", 100, 0, 100, 200},
		{"bytes=a-b", 100, 0, 100, 200},
		{"bytes=0-1,5-6", 100, 0, 100, 200},
		{"items=0-1", 100, 0, 100, 200},
		{"bytes=0-", 0, 0, 0, 200},
	} {
		start, length, status := blobRange(tc.header, tc.size)
		if start != tc.wantStart || length != tc.wantLength || status != tc.wantStatus {
			t.Errorf("blobRange(%q, %d) = %d, %d, %d; want %d, %d, %d", tc.header, tc.size,
				start, length, status, tc.wantStart, tc.wantLength, tc.wantStatus)
		}
	}
}
