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
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
	"golang.org/x/sync/errgroup"

	"github.com/dregistry/dregistry/containerd"
	"github.com/dregistry/dregistry/internal/diskcache"
	"github.com/dregistry/dregistry/internal/egress"
	"github.com/dregistry/dregistry/internal/ops"
	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/internal/preheat"
	"github.com/dregistry/dregistry/internal/seeding"
	"github.com/dregistry/dregistry/registry"
	"github.com/dregistry/dregistry/swarm"
	"github.com/dregistry/dregistry/tracker"
)

func daemonCommand() *cli.Command {
	flags := daemonFlags()
	return &cli.Command{
		Name:   "daemon",
		Usage:  "run the node daemon: containerd's registry mirror and a member of the swarm",
		Flags:  flags,
		Before: altsrc.InitInputSourceWithContext(flags, altsrc.NewYamlSourceFromFlagFunc("config")),
		Action: func(c *cli.Context) error {
			cfg, err := parseDaemonConfig(c)
			if err != nil {
				return err
			}
			logger := slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: cfg.LogLevel}))
			return runDaemon(c.Context, cfg, logger)
		},
	}
}

// runDaemon wires the packages together and serves until ctx ends.
func runDaemon(ctx context.Context, cfg daemonConfig, log *slog.Logger) error {
	clusterKeys, peerKeys, err := loadClusterKeys(cfg, log)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	cache, err := dataDirCache(cfg)
	if err != nil {
		return err
	}
	log.Info("starting dregistry", "version", buildVersion(), "http", cfg.HTTPAddr,
		"containerd", cfg.ContainerdAddress, "default_registry", cfg.DefaultRegistry,
		"allow_registry", cfg.AllowRegistry, "upstream_plain_http", cfg.UpstreamPlainHTTP, "mirror_allow", cfg.MirrorAllow,
		"data_dir", cfg.DataDir, "cache_size", diskcache.FormatSize(cache.Limit()))

	store, err := containerd.New(ctx, containerd.Config{
		Address:    cfg.ContainerdAddress,
		Namespaces: cfg.ContainerdNamespaces,
		Logger:     log.With("component", "containerd"),
	})
	if err != nil {
		return fmt.Errorf("containerd: %w", err)
	}
	defer store.Close()
	inventory := containerd.NewInventory(store)

	tcfg, err := trackerConfig(cfg, clusterKeys)
	if err != nil {
		return err
	}
	tcfg.Logger = log
	members, err := tracker.New(tcfg)
	if err != nil {
		return err
	}
	defer members.Close()

	peerClient := peerHTTPClient(cfg.HTTPAddr, peerKeys, members.LocalName())
	// Without a key (a single node, or --insecure-gossip) members are
	// admitted by their gossip address, as memberlist sees it.
	gate := &peerauth.Gate{Keys: peerKeys, Member: members.IsMember}
	sw, err := swarm.New(swarm.Config{
		DataDir:       filepath.Join(cfg.DataDir, "swarm"),
		ListenAddr:    cfg.TorrentAddr,
		UploadLimit:   cfg.UploadLimit,
		DownloadLimit: cfg.DownloadLimit,
		MaxConns:      cfg.MaxConns,
		Seeders:       seedersOf{members},
		Members:       members,
		PeerKeys:      peerKeys,
		HTTPClient:    peerClient,
		LookupTimeout: cfg.LookupTimeout,
		StallTimeout:  cfg.StallTimeout,
		Cache:         cache,
		// A download no pull reads is dropped after this; its buffers
		// go when its last reader does.
		AbandonTimeout: cfg.AbandonTimeout,
		Freed:          newMemoryReturner().freed,
		Logger:         log,
	})
	if err != nil {
		return err
	}
	defer sw.Close()
	preheats, coordinator, err := newPreheat(ctx, cfg, store, members, peerClient, gate, log.With("component", "preheat"))
	if err != nil {
		return err
	}
	opsSrv, err := ops.New(ops.Config{Node: members.LocalName(), Cluster: members, Torrents: sw, PeerKeys: peerKeys,
		Preheats: preheatStats(preheats)})
	if err != nil {
		return err
	}
	upstream, err := registry.NewUpstream(registry.UpstreamConfig{
		Allow:        append([]string{cfg.DefaultRegistry}, cfg.AllowRegistry...),
		PlainHTTP:    cfg.UpstreamPlainHTTP,
		DockerConfig: cfg.RegistryConfig,
		Logger:       log.With("component", "upstream"),
	})
	if err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	var fetcher *egress.Fetcher
	scfg := seeding.DefaultConfig()
	scfg.Store, scfg.Swarm, scfg.Tracker = store, sw, members
	// The seeder drops an egress spool once containerd holds the blob.
	scfg.Release = func(d digest.Digest) error { return fetcher.Release(d) }
	scfg.Logger = log.With("component", "seeding")
	seeds, err := seeding.New(scfg)
	if err != nil {
		return err
	}
	local := registry.NewLocalSource(store)
	// A download from the upstream is seeded while it arrives (Grow), and
	// the other nodes follow it in the swarm (Pipeline), for blobs of at
	// least pipelineMin bytes.
	const pipelineMin = egress.DefaultPipelineMin
	fetcher, err = egress.NewFetcher(egress.FetcherConfig{
		Local:         local,
		Upstream:      opsSrv.MeterUpstream(upstream), // dregistry_upstream_bytes_total
		SpoolDir:      filepath.Join(cfg.DataDir, "egress"),
		OnStart:       seeds.Growing(swarmGrow(sw), pipelineMin),
		Prefix:        swarmPrefix(sw),
		OnComplete:    seeds.EgressComplete,
		Cache:         cache,
		OnEvict:       seeds.SpoolEvicted,
		LookupTimeout: cfg.LookupTimeout,
		StallTimeout:  cfg.StallTimeout,
		TagTTL:        tagTTL(cfg.TagCacheTTL),
		Logger:        log.With("component", "egress"),
	})
	if err != nil {
		return err
	}
	defer fetcher.Close()
	if err := opsSrv.Register(seeds.Metrics()); err != nil {
		return err
	}
	if err := opsSrv.Register(cache); err != nil { // dregistry_cache_{size,limit}_bytes, _evictions_total
		return err
	}
	if err := opsSrv.Register(fetcher.Metrics()); err != nil { // dregistry_egress_unkept_streams_total
		return err
	}
	stopWatching := inventory.Subscribe(seeds.Changed)
	defer stopWatching()
	ecfg := egress.SourceConfig{
		Self:       members.LocalName(),
		Egress:     cfg.Egress,
		Cluster:    egressCluster{members},
		Fetcher:    fetcher,
		Client:     peerClient,
		PeerKeys:   peerKeys,
		Registries: upstream.Policy(),
		Logger:     log.With("component", "egress"),
	}
	if p := swarmPipeline(sw); p != nil {
		// A follower still gets the owner's stream in time when the swarm
		// delivers nothing: a third of the handler's stall timeout.
		ecfg.Pipeline, ecfg.PipelineMin, ecfg.PipelineStall = p, pipelineMin, cfg.StallTimeout/3
	}
	viaEgress, err := egress.NewSource(ecfg)
	if err != nil {
		return err
	}

	mirror := registry.NewHandler(registry.Config{
		Observer:        opsSrv.Observer(),
		Sources:         []registry.Source{local, sw, viaEgress},
		TagSources:      []registry.Source{viaEgress, local},
		DefaultRegistry: cfg.DefaultRegistry,
		Clients:         registry.NewClients(registry.ClientsConfig{Allow: cfg.MirrorAllow}),
		Registries:      upstream.Policy(),
		LookupTimeout:   cfg.LookupTimeout,
		StallTimeout:    cfg.StallTimeout,
		Logger:          log.With("component", "registry"),
	})

	mux := http.NewServeMux()
	mux.Handle("/peer/v1/", sw.PeerHandler())
	mux.Handle(preheat.PeerPath, preheats.PeerHandler(gate))
	mux.Handle(preheat.AdminPath, coordinator.Handler())
	mux.Handle(egress.PeerPathPrefix, viaEgress.PeerHandler())
	mux.Handle(seedersPath, seedersHandler(gate, members))
	mux.Handle(torrentsPath, torrentsHandler(gate, sw))
	mux.Handle("/", opsSrv.Handler()) // status page, /admin/v1/stats, /metrics
	// /healthz and /readyz answer anyone: kubelet probes from the node's
	// address, and they tell only "ok" or why the node is not ready.
	mux.Handle("/healthz", healthz(members, seeds))
	mux.Handle("/readyz", readyz(store, members, len(cfg.Join) > 0, members, seeds))

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on --http-addr: %w", err)
	}
	srv := &http.Server{
		Handler:           routeMirror(mirror, mux),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return inventory.Run(gctx) })
	g.Go(func() error { return seeds.Run(gctx) })
	g.Go(func() error { return opsSrv.Run(gctx) }) // the status page's traffic history
	g.Go(func() error { joinCluster(gctx, members, cfg.Join, log); return nil })
	g.Go(func() error {
		log.Info("serving", "addr", ln.Addr().String())
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return srv.Shutdown(shutdownCtx)
	})
	err = g.Wait()
	log.Info("stopped")
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// dataDirCache bounds the data dir by --cache-size, or by a share of its
// filesystem (diskcache.DefaultLimit) when the flag is not set.
func dataDirCache(cfg daemonConfig) (*diskcache.Cache, error) {
	limit := cfg.CacheSize
	if limit == 0 {
		var err error
		if limit, err = diskcache.DefaultLimit(cfg.DataDir); err != nil {
			return nil, fmt.Errorf("--cache-size not set: %w", err)
		}
	}
	c, err := diskcache.New(limit)
	if err != nil {
		return nil, fmt.Errorf("--cache-size: %w", err)
	}
	return c, nil
}

// routeMirror sends every /v2/ request to the mirror untouched: ServeMux
// would clean a path such as /v2/a//b and redirect, where the registry API
// must answer 400 NAME_INVALID.
func routeMirror(mirror, rest http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2" || strings.HasPrefix(r.URL.Path, "/v2/") {
			mirror.ServeHTTP(w, r)
			return
		}
		rest.ServeHTTP(w, r)
	})
}

// peerHTTPClient fetches from peers, signing every request as node when
// the cluster is keyed. When the daemon listens on one address, requests
// leave from it too: a keyless cluster admits members by source address,
// and a host with several addresses (or loopback aliases) would otherwise
// pick another one.
func peerHTTPClient(httpAddr string, keys *peerauth.Keys, node string) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if host, _, err := net.SplitHostPort(httpAddr); err == nil {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			dialer.LocalAddr = &net.TCPAddr{IP: ip}
		}
	}
	var rt http.RoundTripper = &http.Transport{
		DialContext:           dialer.DialContext,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   8,
	}
	if keys != nil {
		rt = &peerauth.Transport{Base: rt, Keys: keys, Node: node}
	}
	return &http.Client{Transport: rt}
}

// loadClusterKeys reads --cluster-key-file and derives the peer
// credentials. Joining a cluster without a key is refused unless the
// operator says --insecure-gossip: anyone reaching the gossip port could
// then become a member.
func loadClusterKeys(cfg daemonConfig, log *slog.Logger) ([][]byte, *peerauth.Keys, error) {
	if cfg.ClusterKeyFile == "" {
		switch {
		case len(cfg.Join) > 0 && !cfg.InsecureGossip:
			return nil, nil, errors.New("--join needs --cluster-key-file: without a key anyone who reaches the gossip port becomes a member " +
				"(generate one with: head -c 32 /dev/urandom | base64 > key; give every node the same file), " +
				"or pass --insecure-gossip to run an open cluster anyway")
		case cfg.InsecureGossip:
			log.Error("INSECURE: --insecure-gossip: gossip is unencrypted and peers are admitted by source address; " +
				"any host that reaches the gossip port can join, read this node's peer endpoints and claim the egress role")
		}
		return nil, nil, nil
	}
	keys, err := tracker.LoadKeyFile(cfg.ClusterKeyFile)
	if err != nil {
		return nil, nil, err
	}
	peerKeys, err := peerauth.New(keys)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster key file %s: %w", cfg.ClusterKeyFile, err)
	}
	if cfg.InsecureGossip {
		log.Warn("--insecure-gossip is ignored: --cluster-key-file is set, so gossip is encrypted and peers authenticate")
	}
	return keys, peerKeys, nil
}

// tagTTL maps --tag-cache-ttl to the egress: 0 there means "always ask".
func tagTTL(flag time.Duration) time.Duration {
	if flag == 0 {
		return -1
	}
	return flag
}
