package containerd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
)

// DefaultAddress is containerd's socket on Debian/Ubuntu and upstream packages.
const DefaultAddress = "/run/containerd/containerd.sock"

// Config configures a Store and the Inventory built on it.
type Config struct {
	// Address is containerd's gRPC socket. Default DefaultAddress.
	Address string
	// Namespaces limits the store to these namespaces. Empty means every
	// namespace, listed anew at each lookup and resync.
	Namespaces []string
	// ResyncInterval is how often the Inventory walks all content again,
	// since garbage collection removes blobs without an event. Default 1m.
	ResyncInterval time.Duration
	// ConnectWait bounds how long New waits for containerd to answer before
	// it returns a Store that is not Ready yet. Default 5s.
	ConnectWait time.Duration
	// DialTimeout caps gRPC's reconnect backoff, so a restarted containerd is
	// reached again within about this long. Default 2s.
	DialTimeout time.Duration
	// Logger receives connection and resync messages. Default slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the defaults: every namespace of containerd at
// DefaultAddress.
func DefaultConfig() Config {
	return Config{
		Address:        DefaultAddress,
		ResyncInterval: time.Minute,
		ConnectWait:    5 * time.Second,
		DialTimeout:    2 * time.Second,
		Logger:         slog.Default(),
	}
}

// Validate reports a Config New cannot run with.
func (c Config) Validate() error {
	for _, ns := range c.Namespaces {
		if err := identifiers.Validate(ns); err != nil {
			return fmt.Errorf("containerd namespace %q: %w", ns, err)
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Address == "" {
		c.Address = d.Address
	}
	if c.ResyncInterval <= 0 {
		c.ResyncInterval = d.ResyncInterval
	}
	if c.ConnectWait <= 0 {
		c.ConnectWait = d.ConnectWait
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = d.DialTimeout
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	return c
}

// Store reads content and image records from every chosen namespace of one
// containerd. It writes only what a preheat asks for (FetchImage).
type Store struct {
	cfg    Config
	client *client.Client
	log    *slog.Logger
	ready  atomic.Bool

	rootMu      sync.Mutex
	contentRoot string // content plugin's directory; "" until discovered
}

// New connects to containerd. The client is lazy, so New probes with
// Version, retrying with backoff for at most Config.ConnectWait; a containerd
// that is not up yet does not fail startup: the Store is returned not Ready
// and becomes Ready on the first call that reaches containerd.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	c, err := client.New(cfg.Address, client.WithTimeout(cfg.DialTimeout))
	if err != nil {
		return nil, fmt.Errorf("containerd client for %s: %w", cfg.Address, err)
	}
	s := &Store{cfg: cfg, client: c, log: cfg.Logger.With("containerd", cfg.Address)}

	wctx, cancel := context.WithTimeout(ctx, cfg.ConnectWait)
	defer cancel()
	bo := newBackoff(50*time.Millisecond, time.Second)
	for {
		err = s.Ping(wctx)
		if err == nil {
			return s, nil
		}
		if !bo.wait(wctx) {
			break
		}
	}
	if ctx.Err() != nil {
		c.Close()
		return nil, fmt.Errorf("connect to containerd at %s: %w", cfg.Address, ctx.Err())
	}
	s.log.Warn("containerd not answering yet; continuing and retrying", "err", err)
	return s, nil
}

// Close closes the connection to containerd.
func (s *Store) Close() error { return s.client.Close() }

// Ready reports whether the last contact with containerd succeeded.
func (s *Store) Ready() bool { return s.ready.Load() }

// Ping asks containerd for its version and records whether it answered.
func (s *Store) Ping(ctx context.Context) error {
	v, err := s.client.Version(ctx)
	err = errgrpc.ToNative(err) // the version service returns raw gRPC status errors
	s.observe(err)
	if err != nil {
		return fmt.Errorf("containerd at %s: %w", s.cfg.Address, err)
	}
	if !s.ready.Swap(true) {
		s.log.Info("containerd answers", "version", v.Version)
	}
	return nil
}

// observe updates readiness from an RPC's outcome: only an unreachable
// containerd makes the Store not ready, a not-found answer does not.
func (s *Store) observe(err error) {
	switch {
	case err == nil:
		s.ready.Store(true)
	case errdefs.IsUnavailable(err) || errors.Is(err, context.DeadlineExceeded):
		s.ready.Store(false)
	}
}

// namespaces lists the namespaces to look in.
func (s *Store) namespaces(ctx context.Context) ([]string, error) {
	if len(s.cfg.Namespaces) > 0 {
		return s.cfg.Namespaces, nil
	}
	nss, err := s.client.NamespaceService().List(ctx)
	s.observe(err)
	if err != nil {
		return nil, fmt.Errorf("list containerd namespaces: %w", err)
	}
	return nss, nil
}

// ReaderAt opens dgst from the first namespace whose metadata holds it,
// checked now (events are only hints and GC is silent). Where containerd's
// content directory is readable the reader is the blob's file and has
// File() *os.File, for sendfile; otherwise it reads over gRPC.
func (s *Store) ReaderAt(ctx context.Context, dgst digest.Digest) (content.ReaderAt, error) {
	if err := dgst.Validate(); err != nil {
		return nil, fmt.Errorf("digest %q: %w: %w", dgst, errdefs.ErrInvalidArgument, err)
	}
	ns, info, err := s.find(ctx, dgst)
	if err != nil {
		return nil, err
	}
	nsctx := namespaces.WithNamespace(ctx, ns)
	if f := s.openFile(nsctx, dgst, info.Size); f != nil {
		return f, nil
	}
	conn, ok := s.client.Conn().(*grpc.ClientConn)
	if !ok {
		return nil, fmt.Errorf("read %s: containerd client has no gRPC connection: %w", dgst, errdefs.ErrUnavailable)
	}
	return newStreamReaderAt(nsctx, contentapi.NewContentClient(conn), dgst, info.Size), nil
}

// find returns the first namespace holding dgst and its Info.
func (s *Store) find(ctx context.Context, dgst digest.Digest) (string, content.Info, error) {
	nss, err := s.namespaces(ctx)
	if err != nil {
		return "", content.Info{}, err
	}
	cs := s.client.ContentStore()
	var failed error
	for _, ns := range nss {
		info, err := cs.Info(namespaces.WithNamespace(ctx, ns), dgst)
		s.observe(err)
		switch {
		case err == nil:
			return ns, info, nil
		case errdefs.IsNotFound(err):
		default:
			failed = errors.Join(failed, fmt.Errorf("namespace %s: %w", ns, err))
		}
	}
	if failed != nil {
		return "", content.Info{}, fmt.Errorf("look up %s in containerd: %w", dgst, failed)
	}
	return "", content.Info{}, fmt.Errorf("%s in containerd namespaces %v: %w", dgst, nss, errdefs.ErrNotFound)
}

// openFile opens the blob's file in the content directory, or returns nil
// when that directory is unknown or unreadable (another mount namespace, no
// permission) or the file disagrees with containerd's metadata.
func (s *Store) openFile(ctx context.Context, dgst digest.Digest, size int64) *fileReaderAt {
	root := s.contentDir(ctx)
	if root == "" {
		return nil
	}
	path := filepath.Join(root, "blobs", dgst.Algorithm().String(), dgst.Encoded())
	f, err := os.Open(path)
	if err != nil {
		s.log.Debug("content file not readable; reading over gRPC", "path", path, "err", err)
		return nil
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() != size {
		f.Close()
		s.log.Warn("content file does not match containerd's metadata; reading over gRPC", "path", path, "size", size)
		return nil
	}
	return &fileReaderAt{f: f, size: size}
}

// contentDir discovers the content plugin's root once; PluginInfo would be
// simpler but containerd 1.6 lacks it.
func (s *Store) contentDir(ctx context.Context) string {
	s.rootMu.Lock()
	defer s.rootMu.Unlock()
	if s.contentRoot != "" {
		return s.contentRoot
	}
	resp, err := s.client.IntrospectionService().Plugins(ctx, `type=="io.containerd.content.v1"`)
	s.observe(err)
	if err != nil {
		s.log.Debug("content plugin not introspectable", "err", err)
		return ""
	}
	for _, p := range resp.GetPlugins() {
		root := p.GetExports()["root"]
		if root == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, "blobs")); err != nil {
			s.log.Info("containerd content directory not readable here; serving over gRPC", "root", root, "err", err)
			return ""
		}
		s.contentRoot = root
		s.log.Info("serving containerd content from its directory", "root", root)
		return root
	}
	return ""
}

// ImageTarget returns the target of the image record named name, from the
// namespace where it was updated last.
func (s *Store) ImageTarget(ctx context.Context, name string) (ocispec.Descriptor, error) {
	if name == "" {
		return ocispec.Descriptor{}, fmt.Errorf("image name is empty: %w", errdefs.ErrInvalidArgument)
	}
	nss, err := s.namespaces(ctx)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	is := s.client.ImageService()
	var (
		best    ocispec.Descriptor
		updated time.Time
		found   bool
		failed  error
	)
	for _, ns := range nss {
		img, err := is.Get(namespaces.WithNamespace(ctx, ns), name)
		s.observe(err)
		switch {
		case err == nil:
			if !found || img.UpdatedAt.After(updated) {
				best, updated, found = img.Target, img.UpdatedAt, true
			}
		case errdefs.IsNotFound(err):
		default:
			failed = errors.Join(failed, fmt.Errorf("namespace %s: %w", ns, err))
		}
	}
	switch {
	case found:
		return best, nil
	case failed != nil:
		return ocispec.Descriptor{}, fmt.Errorf("image %s in containerd: %w", name, failed)
	}
	return ocispec.Descriptor{}, fmt.Errorf("image %s in containerd namespaces %v: %w", name, nss, errdefs.ErrNotFound)
}
