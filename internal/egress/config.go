package egress

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/registry"
)

// Defaults for FetcherConfig and SourceConfig.
const (
	// DefaultLookupTimeout is under the registry handler's 5s lookup
	// timeout, so a last-known tag still reaches containerd in time.
	DefaultLookupTimeout = 4 * time.Second
	DefaultStallTimeout  = 30 * time.Second
	DefaultTagTTL        = 5 * time.Second
	DefaultMaxTags       = 4096
	DefaultMaxManifests  = 256
	DefaultMaxAttempts   = 3
)

// FetcherConfig configures the owner side. Zero values take the defaults.
type FetcherConfig struct {
	// Upstream reaches the registries, with this node's credentials
	// (registry.NewUpstream with DockerConfig). Required.
	Upstream registry.Source
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
	Local registry.Source
	// LookupTimeout bounds the upstream's answer to a tag, a manifest or a
	// blob's size. Default DefaultLookupTimeout.
	LookupTimeout time.Duration
	// StallTimeout fails a download that receives no byte for this long
	// (its readers then fail with it); a reader waits at most twice that.
	// Default DefaultStallTimeout.
	StallTimeout time.Duration
	// TagTTL is how long a tag's descriptor is answered without asking the
	// upstream again. Default DefaultTagTTL; negative: always ask (the last
	// known answer still serves while the upstream is unreachable).
	TagTTL time.Duration
	// MaxTags bounds the tag cache (oldest dropped first). Default 4096.
	MaxTags int
	// MaxManifests bounds the cache of manifests by digest. Default 256.
	MaxManifests int
	// Now is the clock of the tag cache; default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
}

func (c *FetcherConfig) setDefaults() error {
	if c.Upstream == nil {
		return errors.New("egress: FetcherConfig.Upstream is required")
	}
	if c.SpoolDir == "" {
		return errors.New("egress: FetcherConfig.SpoolDir is required")
	}
	if c.LookupTimeout <= 0 {
		c.LookupTimeout = DefaultLookupTimeout
	}
	if c.StallTimeout <= 0 {
		c.StallTimeout = DefaultStallTimeout
	}
	if c.TagTTL == 0 {
		c.TagTTL = DefaultTagTTL
	}
	if c.MaxTags <= 0 {
		c.MaxTags = DefaultMaxTags
	}
	if c.MaxManifests <= 0 {
		c.MaxManifests = DefaultMaxManifests
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// SourceConfig configures the Source (and its peer handler) of one node.
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
	// and sign its requests when PeerKeys is set (peerauth.Transport).
	// Default: 5s dial and 30s response header timeouts.
	Client *http.Client
	// PeerKeys, when set (a keyed cluster), admit peer requests by their
	// signed token only; nil admits the addresses Cluster.IsMember names.
	PeerKeys *peerauth.Keys
	// Registries, if set, says which registries the peer handler fetches
	// for members (the upstream client's policy); others get 404 before
	// any lookup.
	Registries registry.RegistryPolicy
	// MaxAttempts bounds the candidates tried per request. Default 3.
	MaxAttempts int
	// Logger; default slog.Default().
	Logger *slog.Logger
}

func (c *SourceConfig) setDefaults() error {
	switch {
	case c.Self == "":
		return errors.New("egress: SourceConfig.Self is required")
	case c.Cluster == nil:
		return errors.New("egress: SourceConfig.Cluster is required")
	case c.Fetcher == nil:
		return errors.New("egress: SourceConfig.Fetcher is required")
	}
	if c.Client == nil {
		c.Client = &http.Client{Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ResponseHeaderTimeout: 30 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   8,
		}}
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}
