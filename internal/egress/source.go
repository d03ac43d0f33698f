package egress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/registry/oci"
)

// Source is the oci.Source of every node for what no member holds:
// it asks the owner of a digest or tag (this node's Fetcher, or the owner's
// peer endpoint) and falls over to the next candidate when an owner fails
// before answering. A node that is not a candidate never calls an upstream.
type Source struct {
	cfg  SourceConfig
	log  *slog.Logger
	gate *peerauth.Gate
}

// NewSource returns the Source; it fails only on a missing required field.
func NewSource(cfg SourceConfig) (*Source, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	return &Source{cfg: cfg, log: cfg.Logger, gate: cfg.Gate}, nil
}

// Name implements oci.Source.
func (s *Source) Name() string { return "egress" }

// owners lists the candidates to ask for key, best first.
func (s *Source) owners(key string) []Member {
	self := Member{Name: s.cfg.Self, Egress: s.cfg.Egress}
	c := candidates(s.cfg.Cluster.Members(), self, key)
	return c[:min(len(c), s.cfg.MaxAttempts)]
}

// ask tries the owners of key in order: local runs on this node's Fetcher,
// remote on a peer's. Not-found is an answer; other failures (and an owner
// that is not a candidate any more) move on to the next candidate.
func ask[T any](ctx context.Context, s *Source, what, key string,
	local func() (T, error), remote func(Member) (T, error),
) (T, error) {
	var errs []error
	for _, m := range s.owners(key) {
		var v T
		var err error
		if m.Name == s.cfg.Self {
			v, err = local()
		} else {
			v, err = remote(m)
		}
		if err == nil || errors.Is(err, oci.ErrNotFound) {
			return v, err
		}
		errs = append(errs, fmt.Errorf("owner %s: %w", m.Name, err))
		if ctx.Err() != nil {
			break
		}
		s.log.Warn("egress owner failed, trying the next candidate", "what", what, "owner", m.Name, "err", err)
	}
	var zero T
	if len(errs) == 0 {
		return zero, fmt.Errorf("egress: %s: no candidate: %w", what, oci.ErrNotFound)
	}
	return zero, fmt.Errorf("egress: %s: %w", what, errors.Join(errs...))
}

// Resolve implements oci.Source.
func (s *Source) Resolve(ctx context.Context, ref oci.Ref, tag string) (ocispec.Descriptor, error) {
	return ask(ctx, s, ref.String()+":"+tag, tagKey(ref, tag),
		func() (ocispec.Descriptor, error) { return s.cfg.Fetcher.Resolve(ctx, ref, tag) },
		func(m Member) (ocispec.Descriptor, error) { return s.remoteResolve(ctx, m, ref, tag) })
}

// Manifest implements oci.Source.
func (s *Source) Manifest(ctx context.Context, ref oci.Ref, dgst digest.Digest) (*oci.Manifest, error) {
	if _, err := oci.ParseDigest(dgst.String()); err != nil {
		return nil, err
	}
	return ask(ctx, s, ref.String()+"@"+dgst.String(), blobKey(dgst),
		func() (*oci.Manifest, error) { return s.cfg.Fetcher.Manifest(ctx, ref, dgst) },
		func(m Member) (*oci.Manifest, error) { return s.remoteManifest(ctx, m, ref, dgst) })
}

// Blob implements oci.Source.
func (s *Source) Blob(ctx context.Context, ref oci.Ref, dgst digest.Digest) (oci.Blob, error) {
	if _, err := oci.ParseDigest(dgst.String()); err != nil {
		return nil, err
	}
	owners := s.owners(blobKey(dgst))
	remote := func(m Member) (oci.Blob, error) { return s.remoteBlob(ctx, m, owners, ref, dgst) }
	if s.cfg.Pipeline != nil {
		remote = func(m Member) (oci.Blob, error) { return s.pipelinedBlob(ctx, m, owners, ref, dgst) }
	}
	return ask(ctx, s, "blob "+dgst.String(), blobKey(dgst),
		func() (oci.Blob, error) { return s.cfg.Fetcher.Fetch(ctx, ref, dgst) }, remote)
}

// StatBlob implements oci.BlobStater: a HEAD learns the size from
// the owner (its spool, its containerd, or its upstream's answer to a
// HEAD) and starts no download anywhere.
func (s *Source) StatBlob(ctx context.Context, ref oci.Ref, dgst digest.Digest) (int64, error) {
	if _, err := oci.ParseDigest(dgst.String()); err != nil {
		return 0, err
	}
	return ask(ctx, s, "size of blob "+dgst.String(), blobKey(dgst),
		func() (int64, error) { return s.cfg.Fetcher.Stat(ctx, ref, dgst) },
		func(m Member) (int64, error) { return s.remoteStat(ctx, m, ref, dgst) })
}

var (
	_ oci.Source     = (*Source)(nil)
	_ oci.BlobStater = (*Source)(nil)
)
