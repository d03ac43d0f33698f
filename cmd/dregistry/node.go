package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/dregistry/dregistry/containerd"
	"github.com/dregistry/dregistry/internal/diskcache"
	"github.com/dregistry/dregistry/internal/egress"
	"github.com/dregistry/dregistry/internal/ops"
	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/internal/preheat"
	"github.com/dregistry/dregistry/internal/seeding"
	"github.com/dregistry/dregistry/registry"
	"github.com/dregistry/dregistry/registry/oci"
	"github.com/dregistry/dregistry/registry/upstream"
	"github.com/dregistry/dregistry/swarm"
	"github.com/dregistry/dregistry/tracker"
)

// The node owns its HTTP listener (mirror, peer and admin endpoints) and
// its data dir: it makes the directory and gives the swarm, the egress
// spools and the cache their parts of it, so their defaults live here.
const (
	defaultHTTPAddr = ":5000"
	defaultDataDir  = "/var/lib/dregistry"
)

// localAdmin is the address of this host's node for the CLI commands
// that ask it (swarm stats, swarm preheat).
const localAdmin = "http://127.0.0.1" + defaultHTTPAddr

// node is one daemon: newNode wires the packages together (and listens,
// so a bad address fails at once), Run serves until its context ends,
// Close releases what newNode opened, in reverse order.
type node struct {
	cfg daemonConfig
	log *slog.Logger

	peerKeys   *peerauth.Keys
	peerClient *http.Client
	gate       *peerauth.Gate
	cache      *diskcache.Cache
	store      *containerd.Store
	inventory  *containerd.Inventory
	members    *tracker.Tracker
	sw         *swarm.Swarm
	ops        *ops.Server
	preheats   *preheat.Runner
	preheat    *preheat.Coordinator
	upstream   *upstream.Client
	fetcher    *egress.Fetcher
	seeds      *seeding.Seeder
	local      oci.Source // containerd's content store
	viaEgress  *egress.Source

	ln  net.Listener
	srv *http.Server

	closers []func() error // what Close releases, in the order opened
}

// newNode builds every component. ctx is the daemon's: components that
// run work of their own (preheat) live as long as it.
func newNode(ctx context.Context, cfg daemonConfig, log *slog.Logger) (n *node, err error) {
	n = &node{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			_ = n.Close()
		}
	}()
	clusterKeys, err := n.openStores(ctx)
	if err != nil {
		return nil, err
	}
	if err := n.openCluster(clusterKeys); err != nil {
		return nil, err
	}
	if err := n.openSwarm(); err != nil {
		return nil, err
	}
	if err := n.openOps(ctx); err != nil {
		return nil, err
	}
	if err := n.openEgress(); err != nil {
		return nil, err
	}
	mux := n.routes()
	if n.ln, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("listen on --http-addr: %w", err)
	}
	n.onClose(n.ln.Close)
	n.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return n, nil
}

func (n *node) onClose(f func() error) { n.closers = append(n.closers, f) }

// Close releases everything newNode opened, last opened first.
func (n *node) Close() error {
	var errs []error
	for i := len(n.closers) - 1; i >= 0; i-- {
		if err := n.closers[i](); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	n.closers = nil
	return errors.Join(errs...)
}

// openStores reads the cluster key, makes the data dir and its cache, and
// connects to containerd.
func (n *node) openStores(ctx context.Context) ([][]byte, error) {
	cfg, log := n.cfg, n.log
	clusterKeys, peerKeys, err := loadClusterKeys(cfg, log)
	if err != nil {
		return nil, err
	}
	n.peerKeys = peerKeys
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if n.cache, err = dataDirCache(cfg); err != nil {
		return nil, err
	}
	log.Info("starting dregistry", "version", buildVersion(), "http", cfg.HTTPAddr,
		"containerd", cfg.ContainerdAddress, "default_registry", cfg.DefaultRegistry,
		"allow_registry", cfg.AllowRegistry, "upstream_plain_http", cfg.UpstreamPlainHTTP, "mirror_allow", cfg.MirrorAllow,
		"data_dir", cfg.DataDir, "cache_size", diskcache.FormatSize(n.cache.Limit()))
	ccfg := containerd.DefaultConfig()
	ccfg.Address, ccfg.Namespaces = cfg.ContainerdAddress, cfg.ContainerdNamespaces
	ccfg.Logger = log.With("component", "containerd")
	if n.store, err = containerd.New(ctx, ccfg); err != nil {
		return nil, fmt.Errorf("containerd: %w", err)
	}
	n.onClose(n.store.Close)
	n.inventory = containerd.NewInventory(n.store)
	return clusterKeys, nil
}

// openCluster starts the gossip member and the peer HTTP client and gate.
func (n *node) openCluster(clusterKeys [][]byte) error {
	tcfg, err := trackerConfig(n.cfg, clusterKeys)
	if err != nil {
		return err
	}
	tcfg.Logger = n.log
	if n.members, err = tracker.New(tcfg); err != nil {
		return err
	}
	n.onClose(n.members.Close)
	n.peerClient = peerHTTPClient(n.cfg.HTTPAddr, n.peerKeys, n.members.LocalName())
	// The one gate of every peer and admin endpoint (swarm, egress,
	// preheat, ops, seeders, torrents). Without a key (a single node, or
	// --insecure-gossip) members are admitted by their gossip address, as
	// memberlist sees it.
	n.gate = &peerauth.Gate{Keys: n.peerKeys, Member: n.members.IsMember}
	return nil
}

func (n *node) openSwarm() error {
	cfg := n.cfg
	scfg := swarm.DefaultConfig()
	scfg.DataDir = filepath.Join(cfg.DataDir, "swarm")
	scfg.ListenAddr = cfg.TorrentAddr
	scfg.UploadLimit, scfg.DownloadLimit, scfg.MaxConns = cfg.UploadLimit, cfg.DownloadLimit, cfg.MaxConns
	scfg.Seeders, scfg.Members = seedersOf{n.members}, n.members
	scfg.PeerKeys, scfg.Gate, scfg.HTTPClient = n.peerKeys, n.gate, n.peerClient
	// The metainfo fetch is one step of the handler's lookup of the
	// swarm: it gets less than the handler's budget.
	scfg.LookupTimeout = egress.LookupBudget(cfg.LookupTimeout)
	scfg.StallTimeout = cfg.StallTimeout
	scfg.Cache = n.cache
	// A download no pull reads is dropped after this; its buffers go when
	// its last reader does.
	scfg.AbandonTimeout = cfg.AbandonTimeout
	scfg.Freed = newMemoryReturner().freed
	scfg.Logger = n.log
	sw, err := swarm.New(scfg)
	if err != nil {
		return err
	}
	n.sw = sw
	n.onClose(sw.Close)
	return nil
}

// openOps builds preheating and the ops server (status page, metrics).
func (n *node) openOps(ctx context.Context) error {
	var err error
	n.preheats, n.preheat, err = newPreheat(ctx, n.cfg, n.store, n.members, n.peerClient, n.gate, n.log.With("component", "preheat"))
	if err != nil {
		return err
	}
	n.ops, err = ops.New(ops.Config{Node: n.members.LocalName(), Cluster: n.members, Torrents: n.sw, Gate: n.gate,
		Preheats: preheatStats(n.preheats)})
	if err != nil {
		return err
	}
	return n.ops.Register(n.cache) // dregistry_cache_{size,limit}_bytes, _evictions_total
}

// openEgress builds the upstream client, the seeding loop and the egress
// fetcher that feeds it, and the egress source.
func (n *node) openEgress() error {
	cfg, log := n.cfg, n.log
	var err error
	ucfg := upstream.DefaultConfig()
	ucfg.Allow = append([]string{cfg.DefaultRegistry}, cfg.AllowRegistry...)
	ucfg.PlainHTTP, ucfg.DockerConfig = cfg.UpstreamPlainHTTP, cfg.RegistryConfig
	ucfg.Logger = log.With("component", "upstream")
	if n.upstream, err = upstream.New(ucfg); err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	scfg := seeding.DefaultConfig()
	scfg.Store, scfg.Swarm, scfg.Tracker = n.store, n.sw, n.members
	// The seeder drops an egress spool once containerd holds the blob.
	scfg.Release = func(d digest.Digest) error { return n.fetcher.Release(d) }
	scfg.Logger = log.With("component", "seeding")
	if n.seeds, err = seeding.New(scfg); err != nil {
		return err
	}
	n.local = registry.NewLocalSource(n.store)
	// A download from the upstream is seeded while it arrives (Grow), and
	// the other nodes follow it in the swarm (Pipeline), for blobs of at
	// least PipelineMin bytes.
	ecfg := egress.DefaultSourceConfig()
	fcfg := egress.DefaultFetcherConfig()
	fcfg.Local = n.local
	fcfg.Upstream = n.ops.MeterUpstream(n.upstream) // dregistry_upstream_bytes_total
	fcfg.SpoolDir = filepath.Join(cfg.DataDir, "egress")
	fcfg.OnStart = n.seeds.Growing(swarmGrow(n.sw), ecfg.PipelineMin)
	fcfg.Prefix = swarmPrefix(n.sw)
	fcfg.OnComplete, fcfg.OnEvict = n.seeds.EgressComplete, n.seeds.SpoolEvicted
	fcfg.Cache = n.cache
	// Less than the handler's budget for the egress source, so a last
	// known tag the fetcher answers when the upstream hangs still arrives.
	fcfg.LookupTimeout = egress.LookupBudget(cfg.LookupTimeout)
	fcfg.StallTimeout = cfg.StallTimeout
	fcfg.TagTTL = cfg.TagCacheTTL
	fcfg.Logger = log.With("component", "egress")
	if n.fetcher, err = egress.NewFetcher(fcfg); err != nil {
		return err
	}
	n.onClose(n.fetcher.Close)
	if err := n.ops.Register(n.seeds.Metrics()); err != nil {
		return err
	}
	if err := n.ops.Register(n.fetcher.Metrics()); err != nil { // dregistry_egress_unkept_streams_total
		return err
	}
	stopWatching := n.inventory.Subscribe(n.seeds.Changed)
	n.onClose(func() error { stopWatching(); return nil })
	ecfg.Self, ecfg.Egress, ecfg.Cluster = n.members.LocalName(), cfg.Egress, egressCluster{n.members}
	ecfg.Fetcher, ecfg.Client, ecfg.Gate = n.fetcher, n.peerClient, n.gate
	ecfg.Registries = n.upstream.Policy()
	ecfg.Logger = log.With("component", "egress")
	if p := swarmPipeline(n.sw); p != nil {
		// A follower still gets the owner's stream in time when the swarm
		// delivers nothing.
		ecfg.Pipeline, ecfg.PipelineStall = p, egress.FollowStall(cfg.StallTimeout)
	}
	n.viaEgress, err = egress.NewSource(ecfg)
	return err
}

// routes is the daemon's HTTP surface: the mirror on /v2/, the peer
// endpoints, the admin API, the status page and the probes.
func (n *node) routes() http.Handler {
	cfg := n.cfg
	hcfg := registry.DefaultConfig()
	hcfg.Observer = n.ops.Observer()
	hcfg.Sources = []oci.Source{n.local, n.sw, n.viaEgress}
	hcfg.TagSources = []oci.Source{n.viaEgress, n.local}
	hcfg.DefaultRegistry = cfg.DefaultRegistry
	ccfg := registry.DefaultClientsConfig()
	ccfg.Allow = cfg.MirrorAllow
	hcfg.Clients = registry.NewClients(ccfg)
	hcfg.Registries = n.upstream.Policy()
	hcfg.LookupTimeout, hcfg.StallTimeout = cfg.LookupTimeout, cfg.StallTimeout
	hcfg.Logger = n.log.With("component", "registry")
	mirror := registry.NewHandler(hcfg)
	mux := http.NewServeMux()
	mux.Handle("/peer/v1/", n.sw.PeerHandler())
	mux.Handle(preheat.PeerPath, n.preheats.PeerHandler(n.gate))
	mux.Handle(preheat.AdminPath, n.preheat.Handler())
	mux.Handle(egress.PeerPathPrefix, n.viaEgress.PeerHandler())
	mux.Handle(seedersPath, seedersHandler(n.gate, n.members))
	mux.Handle(torrentsPath, torrentsHandler(n.gate, n.sw))
	mux.Handle("/", n.ops.Handler()) // status page, /admin/v1/stats, /metrics
	// /healthz and /readyz answer anyone: kubelet probes from the node's
	// address, and they tell only "ok" or why the node is not ready.
	mux.Handle("/healthz", healthz(n.members, n.seeds))
	mux.Handle("/readyz", readyz(n.store, n.members, len(cfg.Join) > 0, n.members, n.seeds))
	return routeMirror(mirror, mux)
}

// Run serves until ctx ends or a component fails, then shuts the HTTP
// server down (bounded) and returns.
func (n *node) Run(ctx context.Context) error {
	n.srv.BaseContext = func(net.Listener) context.Context { return ctx }
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return n.inventory.Run(gctx) })
	g.Go(func() error { return n.seeds.Run(gctx) })
	g.Go(func() error { return n.ops.Run(gctx) }) // the status page's traffic history
	g.Go(func() error { joinCluster(gctx, n.members, n.cfg.Join, n.log); return nil })
	g.Go(func() error {
		n.log.Info("serving", "addr", n.ln.Addr().String())
		if err := n.srv.Serve(n.ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return n.srv.Shutdown(shutdownCtx)
	})
	err := g.Wait()
	n.log.Info("stopped")
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
