package egress

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/diskcache"
	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/registry/oci"
)

// LookupBudget is what a lookup inside a caller's per-source budget outer
// (the registry handler's LookupTimeout) gets: four fifths, so an answer
// the egress gives on its own timeout (the last known tag while the
// upstream hangs) still reaches the handler before it gives up.
func LookupBudget(outer time.Duration) time.Duration { return outer - outer/5 }

// FollowStall is the wait for a followed blob's next byte inside the
// handler's stall timeout: a third, so a follower that gets no byte in
// that time still has the owner's stream in time to keep containerd's
// response alive.
func FollowStall(outerStall time.Duration) time.Duration { return outerStall / 3 }

// DefaultFetcherConfig returns the defaults, derived from the registry
// handler's (oci.DefaultLookupTimeout, oci.DefaultStallTimeout); the
// caller sets Upstream and SpoolDir.
func DefaultFetcherConfig() FetcherConfig {
	return FetcherConfig{
		LookupTimeout: LookupBudget(oci.DefaultLookupTimeout),
		StallTimeout:  oci.DefaultStallTimeout,
		TagTTL:        5 * time.Second,
		MaxTags:       4096,
		MaxManifests:  256,
		// Manifests are a few KiB, so this holds hundreds, while 256 of
		// the largest a registry allows (4 MiB) would be 1 GiB.
		MaxManifestBytes: 16 << 20,
		// A takeover starts its upstream fetch after at most this long
		// without a byte of the blob's prefix from the swarm.
		PrefixStall: 5 * time.Second,
		Now:         time.Now,
		Logger:      slog.Default(),
	}
}

// DefaultSourceConfig returns the defaults; the caller sets Self, Cluster,
// Fetcher and Gate.
func DefaultSourceConfig() SourceConfig {
	return SourceConfig{
		MaxAttempts: 3,
		// The swarm's default small-blob size: smaller blobs come whole
		// over HTTP anyway.
		PipelineMin:   16 << 20,
		PipelineStall: FollowStall(oci.DefaultStallTimeout),
		Logger:        slog.Default(),
	}
}

// FetcherConfig configures the owner side: start from DefaultFetcherConfig.
// Zero values, but TagTTL's, take the defaults.
type FetcherConfig struct {
	// Upstream reaches the registries, with this node's credentials
	// (upstream.New with DockerConfig). Required.
	Upstream oci.Source
	// SpoolDir holds downloads and verified copies; owned by the Fetcher,
	// whose files (sha256-<hex>[.partial]) are removed at start. Required.
	SpoolDir string
	// OnComplete is called once per verified download, on the download's
	// goroutine, with the file to seed from (swarm.Seed over an *os.File)
	// and announce. The file stays until Release (or Close); a descriptor
	// opened before that keeps its bytes readable.
	OnComplete func(dgst digest.Digest, path string, size int64)
	// Local answers blobs this node already holds (containerd's content
	// store). Fetch asks it before starting an upstream download, so a
	// blob whose spool was released once containerd stored it is served
	// from there, not fetched a second time for a member that asks late.
	// Optional.
	Local oci.Source
	// OnStart, if set, is called once per download when the upstream gave
	// the size, on the download's goroutine, before any caller learns the
	// size (so a node told the size finds what OnStart set up, e.g.
	// swarm.Grow), with the spool file as it grows (open it for reading:
	// it is renamed when verified and deleted on failure, and a descriptor
	// keeps its bytes). The download then drives the Progress it returns
	// (nil: none).
	OnStart func(dgst digest.Digest, size int64, path string) Progress
	// Cache is the data dir's cache (--cache-size), shared with the swarm:
	// each spool is an entry, admitted once the size is known, pinned
	// while it downloads and while a caller holds it open, then evicted
	// least recently used first. A spool it has no room for is not
	// written: each caller then streams from the upstream (unkept.go).
	// Nil: spools stay until Release.
	Cache *diskcache.Cache
	// OnEvict is called after the cache deleted the spool of dgst, with no
	// lock of the Fetcher held (the daemon stops seeding it, so its
	// descriptor lets go of the bytes). It must return promptly.
	OnEvict func(dgst digest.Digest)
	// Prefix, if set, is asked for a blob's first bytes before its upstream
	// fetch: when this node takes over a download whose owner died, the
	// chunks members already hold (the swarm) fill the spool, and the
	// upstream is asked only for the rest (Range, when the upstream blob
	// is an oci.ResumableBlob). The whole blob is still hashed before
	// its last byte is released. Optional.
	Prefix Prefix
	// PrefixStall ends the prefix's fetch when no byte came for this long;
	// the upstream then sends the rest from there (from 0 without a byte).
	// The first byte is waited for at most a quarter of LookupTimeout.
	// Default 5 s.
	PrefixStall time.Duration
	// LookupTimeout bounds the upstream's answer to a tag, a manifest or a
	// blob's size: LookupBudget of the handler's lookup timeout.
	LookupTimeout time.Duration
	// StallTimeout fails a download that receives no byte for this long
	// (its readers then fail with it); a reader waits at most twice that.
	// Default: the handler's stall timeout.
	StallTimeout time.Duration
	// TagTTL is how long a tag's descriptor is answered without asking the
	// upstream again; 0: always ask (the last known answer still serves
	// while the upstream is unreachable).
	TagTTL time.Duration
	// MaxTags bounds the tag cache (oldest dropped first). Default 4096.
	MaxTags int
	// MaxManifests bounds the cache of manifests by digest. Default 256.
	MaxManifests int
	// MaxManifestBytes bounds the same cache by the manifests' size (oldest
	// dropped first; a manifest larger than this is not kept). Default
	// 16 MiB.
	MaxManifestBytes int64
	// Now is the clock of the tag cache; default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Validate reports a FetcherConfig NewFetcher cannot run with.
func (c FetcherConfig) Validate() error {
	switch {
	case c.Upstream == nil:
		return errors.New("egress: FetcherConfig.Upstream is required")
	case c.SpoolDir == "":
		return errors.New("egress: FetcherConfig.SpoolDir is required")
	case c.TagTTL < 0:
		return errors.New("egress: FetcherConfig.TagTTL must not be negative")
	}
	return nil
}

func (c *FetcherConfig) setDefaults() error {
	if err := c.Validate(); err != nil {
		return err
	}
	d := DefaultFetcherConfig()
	if c.LookupTimeout <= 0 {
		c.LookupTimeout = d.LookupTimeout
	}
	if c.StallTimeout <= 0 {
		c.StallTimeout = d.StallTimeout
	}
	if c.PrefixStall <= 0 {
		c.PrefixStall = d.PrefixStall
	}
	if c.MaxTags <= 0 {
		c.MaxTags = d.MaxTags
	}
	if c.MaxManifests <= 0 {
		c.MaxManifests = d.MaxManifests
	}
	if c.MaxManifestBytes <= 0 {
		c.MaxManifestBytes = d.MaxManifestBytes
	}
	if c.Now == nil {
		c.Now = d.Now
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	return nil
}

// Progress follows one download from the upstream (FetcherConfig.OnStart).
// Its methods are called on the download's goroutine, one at a time:
// Advance any number of times with a growing n, then exactly one of
// Complete or Fail, and nothing after that.
type Progress interface {
	// Advance says bytes [0,n) of the spool file are written. These bytes
	// are not yet checked against the digest. It must not block: the
	// download waits for it.
	Advance(n int64)
	// Complete says the whole blob is written and matched its digest. It
	// is called before OnComplete.
	Complete()
	// Fail says the download failed (upstream error, digest mismatch,
	// stall, Close) and its file is gone.
	Fail(err error)
}

// Prefix fills the start of a blob's spool from what the cluster holds
// (the swarm's chunks of it, FetcherConfig.Prefix).
type Prefix interface {
	// Prefix writes to w, in order from byte 0, the first bytes of dgst
	// (size bytes) that members hold, each checked before it is written
	// (piece hashes), and returns how many it wrote: 0 when none hold any.
	// It stops when ctx ends, having written whole checked bytes only; an
	// error after some bytes leaves those bytes good. It never writes the
	// bytes of another blob, and may write the whole blob.
	Prefix(ctx context.Context, dgst digest.Digest, size int64, w io.Writer) (int64, error)
}

// SourceConfig configures the Source (and its peer handler) of one node:
// start from DefaultSourceConfig. Zero values take the defaults.
type SourceConfig struct {
	// Self is this node's member name, as Cluster lists it. Required.
	Self string
	// Egress is this node's own role (--egress).
	Egress bool
	// Cluster is the membership view. Required.
	Cluster Cluster
	// Fetcher is this node's owner side, used when it owns a digest or tag
	// and by the peer handler. Required.
	Fetcher *Fetcher
	// Client asks owners; it should leave from the address members know,
	// and sign its requests when Gate has keys (peerauth.Transport).
	// Default: 5s dial and 30s response header timeouts.
	Client *http.Client
	// Gate admits the peer handler's requests: the node's one gate, so
	// every peer endpoint admits alike. Required.
	Gate *peerauth.Gate
	// Registries, if set, says which registries the peer handler fetches
	// for members (the upstream client's policy); others get 404 before
	// any lookup.
	Registries interface{ Allows(registry string) error }
	// MaxAttempts bounds the candidates tried per request. Default 3.
	MaxAttempts int
	// Pipeline, if set, is how this node follows a blob another node
	// fetches (the swarm): it asks the owner to start the download
	// without streaming it, then follows it, trading pieces with the
	// other waiting nodes; it streams from the owners as without it when
	// Follow or a read fails or stalls. The owner reads its own spool.
	Pipeline Pipeline
	// PipelineMin is the smallest blob followed through Pipeline; smaller
	// ones are streamed from the owner. Default 16 MiB.
	PipelineMin int64
	// PipelineStall bounds the wait for a followed blob's next byte while
	// the blob does not move (a Pipeline blob's Progress: bytes arriving
	// from the swarm, or the owner's upstream fetch growing while this
	// node has all the owner published): after it the read streams from
	// the owner, or the next candidate, instead. Keep it well under the
	// registry handler's stall timeout, which still ends a response that
	// gets no byte (a chunk slower than that from the upstream). Default
	// FollowStall of the handler's default stall timeout.
	PipelineStall time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Validate reports a SourceConfig NewSource cannot run with.
func (c SourceConfig) Validate() error {
	switch {
	case c.Self == "":
		return errors.New("egress: SourceConfig.Self is required")
	case c.Cluster == nil:
		return errors.New("egress: SourceConfig.Cluster is required")
	case c.Fetcher == nil:
		return errors.New("egress: SourceConfig.Fetcher is required")
	case c.Gate == nil:
		return errors.New("egress: SourceConfig.Gate is required: it admits the peer endpoint's requests")
	case c.MaxAttempts < 0 || c.PipelineMin < 0 || c.PipelineStall < 0:
		return errors.New("egress: SourceConfig.MaxAttempts, PipelineMin and PipelineStall must not be negative")
	}
	return nil
}

func (c *SourceConfig) setDefaults() error {
	if err := c.Validate(); err != nil {
		return err
	}
	d := DefaultSourceConfig()
	if c.Client == nil {
		c.Client = &http.Client{Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ResponseHeaderTimeout: 30 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   8,
		}}
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = d.MaxAttempts
	}
	if c.PipelineMin == 0 {
		c.PipelineMin = d.PipelineMin
	}
	if c.PipelineStall == 0 {
		c.PipelineStall = d.PipelineStall
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	return nil
}
