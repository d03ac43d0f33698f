package egress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/registry/oci"
)

// Peer paths of the owner side (PeerHandler); ns and repo name the
// repository: ?ns=<registry>&repo=<repository>.
const (
	PeerPathPrefix   = "/peer/v1/egress/"
	blobsPath        = PeerPathPrefix + "blobs/"     // + digest: the blob, with Range
	manifestsPath    = PeerPathPrefix + "manifests/" // + digest: the manifest
	tagsPath         = PeerPathPrefix + "tags/"      // + tag: its descriptor as JSON
	fetchPath        = PeerPathPrefix + "fetch/"     // + digest, POST: start the download, answer its size
	maxManifestBytes = 4 << 20                       // as registry's manifest cap
	maxDescriptor    = 64 << 10
)

// peerGet asks owner m for path. A reply other than 200 is an error
// (oci.ErrNotFound for 404, the owner's upstream not having it).
func (s *Source) peerGet(ctx context.Context, m Member, path string, ref oci.Ref) (*http.Response, error) {
	return s.peerDo(ctx, http.MethodGet, m, path, ref)
}

// peerDo is peerGet with any method; an owner answering 405 (it predates
// the path) gives an error wrapping errMethod.
func (s *Source) peerDo(ctx context.Context, method string, m Member, path string, ref oci.Ref) (*http.Response, error) {
	return s.peerDoFrom(ctx, method, m, path, ref, 0)
}

// peerDoFrom is peerDo asking for the bytes from offset on (a Range, when
// offset > 0): the answer is then 206 or an error.
func (s *Source) peerDoFrom(ctx context.Context, method string, m Member, path string, ref oci.Ref, offset int64) (*http.Response, error) {
	q := url.Values{"ns": {ref.Registry}, "repo": {ref.Repository}}
	u := "http://" + m.HTTPAddr + path + "?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	// Built here, so nothing of containerd's request (no Authorization)
	// can ride along; the owner must answer from its own Fetcher.
	req.Header.Set(oci.NoForwardHeader, "1")
	want := http.StatusOK
	if offset > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
		want = http.StatusPartialContent
	}
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == want {
		return resp, nil
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	err = fmt.Errorf("%s %s: %s: %q", method, u, resp.Status, msg)
	switch resp.StatusCode {
	case http.StatusNotFound:
		return nil, fmt.Errorf("%w: %w", oci.ErrNotFound, err)
	case http.StatusMethodNotAllowed:
		return nil, fmt.Errorf("%w: %w", errMethod, err)
	}
	return nil, err
}

func (s *Source) remoteResolve(ctx context.Context, m Member, ref oci.Ref, tag string) (ocispec.Descriptor, error) {
	var desc ocispec.Descriptor
	resp, err := s.peerGet(ctx, m, tagsPath+url.PathEscape(tag), ref)
	if err != nil {
		return desc, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDescriptor+1))
	if err != nil {
		return desc, fmt.Errorf("tag %s from %s: %w", tag, m.Name, err)
	}
	if len(body) > maxDescriptor {
		return desc, fmt.Errorf("tag %s from %s: descriptor larger than %d bytes", tag, m.Name, maxDescriptor)
	}
	if err := json.Unmarshal(body, &desc); err != nil {
		return desc, fmt.Errorf("tag %s from %s: %w", tag, m.Name, err)
	}
	if _, err := oci.ParseDigest(desc.Digest.String()); err != nil {
		return desc, fmt.Errorf("tag %s from %s: %w", tag, m.Name, err)
	}
	if desc.Size < 0 || desc.Size > maxManifestBytes {
		return desc, fmt.Errorf("tag %s from %s: impossible manifest size %d", tag, m.Name, desc.Size)
	}
	return desc, nil
}

func (s *Source) remoteManifest(ctx context.Context, m Member, ref oci.Ref, dgst digest.Digest) (*oci.Manifest, error) {
	resp, err := s.peerGet(ctx, m, manifestsPath+dgst.String(), ref)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestBytes+1))
	if err != nil {
		return nil, fmt.Errorf("manifest %s from %s: %w", dgst, m.Name, err)
	}
	if len(body) > maxManifestBytes {
		return nil, fmt.Errorf("manifest %s from %s: larger than %d bytes", dgst, m.Name, maxManifestBytes)
	}
	if got := dgst.Algorithm().FromBytes(body); got != dgst {
		return nil, fmt.Errorf("manifest %s from %s: content hashes to %s", dgst, m.Name, got)
	}
	mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil {
		return nil, fmt.Errorf("manifest %s from %s: Content-Type: %w", dgst, m.Name, err)
	}
	return &oci.Manifest{MediaType: mt, Digest: dgst, Content: body}, nil
}

// remoteStat asks owner m for the blob's size with a HEAD, which starts
// nothing there (servePeerBlob).
func (s *Source) remoteStat(ctx context.Context, m Member, ref oci.Ref, dgst digest.Digest) (int64, error) {
	resp, err := s.peerDo(ctx, http.MethodHead, m, blobsPath+dgst.String(), ref)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if got := resp.Header.Get("Docker-Content-Digest"); got != dgst.String() {
		return 0, fmt.Errorf("size of blob %s from %s: reply names digest %q", dgst, m.Name, got)
	}
	if resp.ContentLength < 0 {
		return 0, fmt.Errorf("size of blob %s from %s: no Content-Length", dgst, m.Name)
	}
	return resp.ContentLength, nil
}

// remoteBlob asks owner m for the blob; the reply's body serves the first
// Open from offset 0. owners are asked again, m first, for any other Open.
func (s *Source) remoteBlob(ctx context.Context, m Member, owners []Member, ref oci.Ref, dgst digest.Digest) (oci.Blob, error) {
	resp, err := s.peerGet(ctx, m, blobsPath+dgst.String(), ref)
	if err != nil {
		return nil, err
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != dgst.String() {
		resp.Body.Close()
		return nil, fmt.Errorf("blob %s from %s: reply names digest %q", dgst, m.Name, got)
	}
	if resp.ContentLength < 0 {
		resp.Body.Close()
		return nil, fmt.Errorf("blob %s from %s: no Content-Length", dgst, m.Name)
	}
	order := []Member{m}
	for _, o := range owners {
		if o.Name != m.Name && o.Name != s.cfg.Self {
			order = append(order, o)
		}
	}
	return &remoteBlob{s: s, ref: ref, dgst: dgst, size: resp.ContentLength, owners: order, pending: resp.Body}, nil
}

// remoteBlob is a blob an owner streams. Every Open reads from the start
// and hashes the bytes before offset, since a digest cannot be checked from
// the middle: nothing unverified completes a response.
type remoteBlob struct {
	s      *Source
	ref    oci.Ref
	dgst   digest.Digest
	size   int64
	owners []Member

	mu      sync.Mutex
	pending io.ReadCloser
}

func (b *remoteBlob) Size() int64 { return b.size }

func (b *remoteBlob) takePending() io.ReadCloser {
	b.mu.Lock()
	defer b.mu.Unlock()
	body := b.pending
	b.pending = nil
	return body
}

func (b *remoteBlob) Close() error {
	if body := b.takePending(); body != nil {
		return body.Close()
	}
	return nil
}

func (b *remoteBlob) Open(ctx context.Context, offset int64) (io.ReadCloser, error) {
	if offset < 0 || offset > b.size {
		return nil, fmt.Errorf("offset %d outside blob %s of %d bytes", offset, b.dgst, b.size)
	}
	body := b.takePending()
	if body == nil {
		var errs []error
		for _, m := range b.owners {
			resp, err := b.s.peerGet(ctx, m, blobsPath+b.dgst.String(), b.ref)
			if err == nil && resp.ContentLength != b.size {
				resp.Body.Close()
				err = fmt.Errorf("owner says %d bytes, not %d", resp.ContentLength, b.size)
			}
			if err == nil {
				body = resp.Body
				break
			}
			errs = append(errs, fmt.Errorf("owner %s: %w", m.Name, err))
			if ctx.Err() != nil {
				break
			}
		}
		if body == nil {
			return nil, fmt.Errorf("egress: blob %s: %w", b.dgst, errors.Join(errs...))
		}
	}
	return oci.NewVerifyingReader(body, fmt.Sprintf("blob %s from owner", b.dgst), b.dgst, b.size, offset), nil
}

// resume streams the blob from byte pos on, from the first owner that
// answers the Range, continuing h, the hash of bytes [0,pos) the caller
// got elsewhere (the swarm) and delivered: the blob's digest is checked
// over both before its last byte is released. So a followed read that
// falls back does not make an owner send again what the swarm delivered
// (BenchmarkRollout, 1 GiB: an owner streamed 4 blobs to followers that
// fell back hundreds of MiB in).
func (b *remoteBlob) resume(ctx context.Context, pos int64, h hash.Hash) (io.ReadCloser, error) {
	if body := b.takePending(); body != nil {
		body.Close() // from byte 0
	}
	var errs []error
	for _, m := range b.owners {
		resp, err := b.s.peerDoFrom(ctx, http.MethodGet, m, blobsPath+b.dgst.String(), b.ref, pos)
		if err == nil {
			if cr, want := resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-%d/%d", pos, b.size-1, b.size); cr == want {
				return oci.NewResumedVerifyingReader(resp.Body, fmt.Sprintf("blob %s from owner %s", b.dgst, m.Name), b.dgst, b.size, pos, h), nil
			}
			resp.Body.Close()
			err = fmt.Errorf("answered %q for bytes %d-", resp.Header.Get("Content-Range"), pos)
		}
		errs = append(errs, fmt.Errorf("owner %s: %w", m.Name, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("egress: blob %s from byte %d: %w", b.dgst, pos, errors.Join(errs...))
}
