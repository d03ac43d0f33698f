package swarm

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	alog "github.com/anacrolix/log"
	"github.com/anacrolix/torrent"
	pp "github.com/anacrolix/torrent/peer_protocol"
	"github.com/anacrolix/torrent/storage"
	"github.com/opencontainers/go-digest"
	"golang.org/x/time/rate"

	"github.com/dregistry/dregistry/internal/diskcache"
	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/registry/oci"
)

// Peer is a node that seeds a digest, as the tracker knows it.
type Peer struct {
	TorrentAddr netip.AddrPort // its BitTorrent listener (--torrent-addr)
	HTTPAddr    string         // host:port of its peer HTTP endpoint
	// Partial marks a peer still downloading the blob: it passes pieces
	// on, but cannot be the only hope of a download.
	Partial bool
}

// Seeders lists the current seeders of a digest (the tracker's lookup).
type Seeders interface {
	Seeders(digest.Digest) []Peer
}

// Config configures a Swarm: start from DefaultConfig. Zero values take
// the documented defaults.
type Config struct {
	// DataDir holds downloads, metainfo and the client's state. Required.
	DataDir string
	// ListenAddr is the BitTorrent listener (--torrent-addr); default ":6881".
	// Port 0 picks a free port (see Swarm.TorrentAddr).
	ListenAddr string
	// UploadLimit and DownloadLimit are bytes per second for the whole node;
	// 0 means unlimited.
	UploadLimit, DownloadLimit int64
	// MaxConns caps the established connections of each torrent; default 50.
	MaxConns int
	// Seeders finds the seeders of a digest. Required.
	Seeders Seeders
	// Members is the torrent allow-list (current members' addresses).
	// Required.
	Members Members
	// PeerKeys, when set (a keyed cluster), authenticate members: every
	// torrent connection runs peerauth's handshake before BitTorrent's;
	// addresses alone grant nothing. HTTPClient must then sign its
	// requests (peerauth.Transport).
	PeerKeys *peerauth.Keys
	// Gate admits peer-HTTP requests: the node's one gate, with the same
	// keys as PeerKeys (a signed token when keyed, a member's address
	// otherwise). Required.
	Gate *peerauth.Gate
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// HTTPClient fetches metainfo and small blobs from peers; default a client
	// with a 5 s connect and 30 s header timeout.
	HTTPClient *http.Client
	// SmallBlobSize: blobs smaller than this skip the torrent and come whole
	// over HTTP from one seeder, buffered in memory and verified. Default
	// 16 MiB: measured, one HTTP fetch beats the torrent 1.8x at 256 KiB and
	// 1.4x at 16 MiB (BenchmarkSmallBlob); above it one seeder would carry
	// the whole load and the buffer grows.
	SmallBlobSize int64
	// SmallFetchBytes bounds the buffers of the small-blob fetches running
	// at once (each holds its blob's size); a fetch waits for room, within
	// its caller's deadline. Default 64 MiB: four blobs of the largest
	// small size, or hundreds of configs and small layers. At least
	// SmallBlobSize.
	SmallFetchBytes int64
	// LookupTimeout bounds the metainfo fetch from seeders; default 5 s.
	LookupTimeout time.Duration
	// StallTimeout fails a read that receives nothing for this long (no
	// byte of the chunk it waits on arrives: watchdog.go), so the response
	// is aborted and containerd retries; default 30 s.
	StallTimeout time.Duration
	// PeerRefresh is how often a download asks Seeders for new peers;
	// default 2 s.
	PeerRefresh time.Duration
	// OrphanTimeout fails the waiting reads of a download that has had no
	// complete peer and no progress for this long: the tracker names no
	// complete seeder (they went, say containerd dropped the blob) and no
	// byte arrived from the partial peers left. Nothing is coming, so the
	// response is cut now rather than after StallTimeout, and containerd's
	// retry finds its next source (Blob answers "no complete seeder" at
	// once). Default 5 s.
	OrphanTimeout time.Duration
	// Readahead bounds the verified pieces the chunk downloads of a stream's
	// window keep in memory for its reader (pieceBuffers; each of its at
	// most 2·windowChunks chunks keeps Readahead/(2·windowChunks));
	// default 64 MiB. Which pieces are fetched is the window's business
	// (window.go).
	Readahead int64
	// DownloadRetention: downloads left unfinished and untouched this long
	// (a pull that was abandoned) are deleted when the swarm starts; younger
	// ones stay so a retry resumes. Default 24 h.
	DownloadRetention time.Duration
	// ChunkSize is the BitTorrent request size; default 256 KiB (16 KiB, the
	// protocol's usual, halved throughput here: see swarm/BENCHMARKS.md).
	ChunkSize int
	// Cache bounds what the data dir holds (--cache-size; the egress's
	// spools share it): downloads and metainfo are its entries, evicted
	// least recently used first. Default: unbounded.
	Cache *diskcache.Cache
	// MetainfoPoll bounds how long the peer endpoint holds a request for a
	// chunk of a growing blob that is not published yet; default 3 s. Its
	// answers say how far the owner's fetch got, which a follower waiting
	// on the owner counts as progress (follow.go), so it is well below the
	// egress pipeline's stall bound.
	MetainfoPoll time.Duration
	// AbandonTimeout: a download no stream has read for this long is
	// abandoned (containerd gave up on it, or only asked its HEAD) and is
	// dropped with its files, unless peers fetched pieces from it during
	// that time: every download is announced as a partial seed, and one
	// that others are downloading from still serves the cluster. Its piece
	// buffers go as soon as its last stream closes. Default 5 min.
	AbandonTimeout time.Duration
	// Freed, if set, hears of the piece buffers downloads let go of (read
	// through, no longer kept once the last stream closed, or closed), so
	// the daemon can hand that memory back to the OS once the work is done
	// instead of waiting for the runtime's next GC. It is called with a
	// download's lock held, sometimes with the library's client lock: it
	// must not block or call the swarm.
	Freed func(bytes int64)

	// chunkBytes overrides ChunkBytes in tests (a multiple of every piece
	// length they use); every node of a test sets the same.
	chunkBytes int64
}

// DefaultConfig returns the defaults; the caller sets DataDir, Seeders,
// Members and Gate. The lookup and stall timeouts are the registry
// handler's (oci.DefaultLookupTimeout, oci.DefaultStallTimeout).
func DefaultConfig() Config {
	return Config{
		ListenAddr:      ":6881",
		MaxConns:        50,
		Logger:          slog.Default(),
		SmallBlobSize:   16 << 20,
		SmallFetchBytes: 64 << 20,
		LookupTimeout:   oci.DefaultLookupTimeout,
		StallTimeout:    oci.DefaultStallTimeout,
		PeerRefresh:     2 * time.Second,
		OrphanTimeout:   5 * time.Second,
		Readahead:       64 << 20,
		// Long enough for a retry to resume an interrupted download.
		DownloadRetention: 24 * time.Hour,
		ChunkSize:         256 << 10,
		MetainfoPoll:      3 * time.Second,
		// Long enough for containerd to come back with a Range retry
		// after a stall, or for the next pull of a batch to reach the
		// blob, short against a daemon's life.
		AbandonTimeout: 5 * time.Minute,
	}
}

// Validate reports a Config New cannot run with (zero values, which take
// the defaults, are fine).
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("swarm: Config.DataDir is required")
	}
	if c.Seeders == nil || c.Members == nil {
		return errors.New("swarm: Config.Seeders and Config.Members are required")
	}
	if c.Gate == nil {
		return errors.New("swarm: Config.Gate is required: it admits the peer endpoint's requests")
	}
	if c.Gate.Keys != c.PeerKeys {
		return errors.New("swarm: Config.Gate and Config.PeerKeys must hold the same keys: peer HTTP and torrent connections admit alike")
	}
	if c.UploadLimit < 0 || c.DownloadLimit < 0 || c.MaxConns < 0 || c.SmallBlobSize < 0 || c.Readahead < 0 || c.ChunkSize < 0 {
		return errors.New("swarm: limits and sizes must not be negative")
	}
	// Pieces are split into whole chunks: a power of two no larger than the
	// smallest piece keeps every piece a multiple of the chunk size.
	if c.ChunkSize != 0 && (c.ChunkSize < 16<<10 || c.ChunkSize > minPieceLength || c.ChunkSize&(c.ChunkSize-1) != 0) {
		return fmt.Errorf("swarm: ChunkSize %d must be a power of two from 16 KiB to %d", c.ChunkSize, minPieceLength)
	}
	return nil
}

func (c *Config) setDefaults() error {
	if err := c.Validate(); err != nil {
		return err
	}
	d := DefaultConfig()
	if c.ListenAddr == "" {
		c.ListenAddr = d.ListenAddr
	}
	if c.MaxConns == 0 {
		c.MaxConns = d.MaxConns
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			ResponseHeaderTimeout: 30 * time.Second,
			MaxIdleConnsPerHost:   4,
		}}
	}
	if c.SmallBlobSize == 0 {
		c.SmallBlobSize = d.SmallBlobSize
	}
	if c.SmallFetchBytes <= 0 {
		c.SmallFetchBytes = d.SmallFetchBytes
	}
	c.SmallFetchBytes = max(c.SmallFetchBytes, c.SmallBlobSize)
	if c.LookupTimeout == 0 {
		c.LookupTimeout = d.LookupTimeout
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = d.StallTimeout
	}
	if c.PeerRefresh == 0 {
		c.PeerRefresh = d.PeerRefresh
	}
	if c.OrphanTimeout == 0 {
		c.OrphanTimeout = d.OrphanTimeout
	}
	if c.Readahead == 0 {
		c.Readahead = d.Readahead
	}
	if c.DownloadRetention == 0 {
		c.DownloadRetention = d.DownloadRetention
	}
	if c.ChunkSize == 0 {
		c.ChunkSize = d.ChunkSize
	}
	if c.Cache == nil {
		c.Cache = unbounded()
	}
	if c.MetainfoPoll <= 0 {
		c.MetainfoPoll = d.MetainfoPoll
	}
	if c.AbandonTimeout <= 0 {
		c.AbandonTimeout = d.AbandonTimeout
	}
	return nil
}

// Swarm is this node's torrent client: it seeds local blobs and downloads
// missing ones from the cluster's seeders. It is an oci.Source named
// "swarm".
type Swarm struct {
	cfg       Config
	client    *torrent.Client
	meta      metainfoCache
	downloads downloadStorage
	cache     *diskcache.Cache
	received  *peerCounters
	traffic   *peerTraffic
	small     *smallFetches
	log       *slog.Logger
	gate      *peerauth.Gate
	auth      peerauth.Counters
	listener  net.Listener // ours when PeerKeys is set; nil otherwise
	// tiebreak seeds this node's piece order inside a chunk in a wide
	// swarm (window.go), so downloaders of one seeder start on different
	// pieces.
	tiebreak uint64
	// wantPace is wantPace (window.go); tests lengthen it before the first
	// download starts.
	wantPace time.Duration

	// admitMu serializes the start of downloads (Blob's Open, Follow):
	// the table is checked, the cache admits the download (evicting others,
	// which takes mu) and the table gains it, with no other start between.
	admitMu sync.Mutex

	mu       sync.Mutex
	torrents map[digest.Digest]*entry
	changes  chan struct{} // Changes; signalled wherever torrents changes
	closed   bool
	stop     chan struct{}
	wg       sync.WaitGroup
}

// entry is one blob of the client, as a row of chunk torrents: a seed over
// local content, a growing seed over the egress spool (Grow), or a download
// into the data directory (Blob's warm path, or Follow).
type entry struct {
	digest digest.Digest
	lay    layout
	// info is the whole blob's metainfo; nil while the blob grows or is
	// followed and not every chunk is known yet.
	info *blobInfo
	seed io.ReaderAt // complete local content; nil otherwise
	// growing marks the owner's spool while it grows (never served whole).
	growing bool
	// owner is the peer endpoint (host:port) a followed blob's chunk
	// metainfo comes from; "" otherwise.
	owner string
	// ownerTorrent is the owner's torrent address, once its endpoint said.
	ownerTorrent netip.AddrPort
	// grown is a growing blob's count of bytes written (Growth.written),
	// which its chunk metainfo answers report; nil otherwise.
	grown *atomic.Int64
	// Of a followed blob, the owner's fetch as its chunk metainfo answers
	// say (followChunks is the only writer): ownerHas is the bytes it last
	// said it had (-1 before it said), ownerWaited the growth it reported
	// while this node held every byte it had published (follow.go).
	ownerHas    atomic.Int64
	ownerWaited atomic.Int64
	// disk is a download's entry in the data dir's cache; nil for seeds
	// and growths (containerd's content, the egress's spool).
	disk *diskcache.Entry

	// Guarded by Swarm.mu.
	chunks  []*chunk // one per chunk; nil until its torrent is added
	reading int      // the furthest chunk a stream of it reads
	// windowEnd: chunks before it may be added (window.go).
	windowEnd int
	// wide: the tracker named more peers of a download than a torrent
	// connects to, so its chunks take the wide swarm's piece choice
	// (window.go). It never goes back.
	wide    bool
	changed chan struct{} // closed and replaced when a chunk is added or the entry ends
	gone    error         // why the entry left the table; waiters stop
	// Of a download: the streams reading it (counted, and each one, so a
	// download left with no peer can fail those that wait: orphan.go), and
	// the timer that drops it once none has for AbandonTimeout (abandon.go).
	readers  int
	streams  map[*streamReader]struct{}
	idle     *time.Timer
	uploaded int64 // its chunks' uploads when the idle timer was armed

	// verified is closed once a download's whole digest has been checked.
	verified chan struct{}
	once     sync.Once
	stop     chan struct{} // ends the entry's goroutines
}

// chunk is one chunk torrent of an entry.
type chunk struct {
	info *chunkInfo
	t    *torrent.Torrent
	// src is a grown chunk's content and first-read check (grownStorage),
	// which promote and Replace change; nil for other chunks.
	src *atomic.Pointer[grownSource]
	// wantMu serializes the wanting of the chunk's pieces: a new download
	// chunk's paced want (startChunk) and widen's. Taken with no lock of
	// the package held; the client lock is taken under it.
	wantMu sync.Mutex
}

func newEntry(dgst digest.Digest, lay layout) *entry {
	e := &entry{digest: dgst, lay: lay, chunks: make([]*chunk, lay.numChunks()),
		changed: make(chan struct{}), verified: make(chan struct{}), stop: make(chan struct{})}
	e.ownerHas.Store(-1)
	return e
}

func (e *entry) size() int64 { return e.lay.size }

// signalLocked wakes everyone waiting for a change of e. Caller holds
// Swarm.mu.
func (e *entry) signalLocked() {
	close(e.changed)
	e.changed = make(chan struct{})
}

func (e *entry) markVerified() bool {
	first := false
	e.once.Do(func() { close(e.verified); first = true })
	return first
}

func (e *entry) isVerified() bool {
	select {
	case <-e.verified:
		return true
	default:
		return false
	}
}

// New starts the torrent client, listening on cfg.ListenAddr.
func New(cfg Config) (*Swarm, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	host, portStr, err := net.SplitHostPort(cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("swarm: listen address %q: %w", cfg.ListenAddr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("swarm: listen port %q: %w", portStr, err)
	}
	for _, d := range []string{"downloads", "metainfo", "client"} {
		if err := os.MkdirAll(filepath.Join(cfg.DataDir, d), 0o755); err != nil {
			return nil, fmt.Errorf("swarm: data dir: %w", err)
		}
	}
	s := &Swarm{
		cfg:       cfg,
		meta:      metainfoCache{dir: filepath.Join(cfg.DataDir, "metainfo"), cache: cfg.Cache},
		cache:     cfg.Cache,
		downloads: downloadStorage{dir: filepath.Join(cfg.DataDir, "downloads"), log: cfg.Logger.With("component", "swarm"), keep: cfg.Readahead / (2 * windowChunks), chunk: int64(cfg.ChunkSize), opened: newOpenDownloads(), freed: cfg.Freed},
		received:  newPeerCounters(),
		traffic:   newPeerTraffic(),
		small:     newSmallFetches(cfg.SmallFetchBytes),
		log:       cfg.Logger.With("component", "swarm"),
		torrents:  map[digest.Digest]*entry{},
		changes:   make(chan struct{}, 1),
		stop:      make(chan struct{}),
		gate:      cfg.Gate,
		tiebreak:  mrand.Uint64(),
		wantPace:  wantPace,
	}
	if err := s.downloads.prune(time.Now().Add(-cfg.DownloadRetention)); err != nil {
		s.log.Warn("old downloads not pruned", "err", err)
	}
	s.accountLeftovers()
	cc := s.clientConfig(host, int(port))
	bindIP := listenIP(host)
	if cfg.PeerKeys != nil {
		if err := s.startAuthenticated(cc, bindIP); err != nil {
			return nil, err
		}
		return s, nil
	}
	if bindIP != nil {
		cc.DialForPeerConns = false // the dialer added below leaves from bindIP
	}
	s.client, err = torrent.NewClient(cc)
	if err != nil {
		return nil, fmt.Errorf("swarm: start torrent client on %s: %w", cfg.ListenAddr, err)
	}
	if bindIP != nil {
		// Members admit each other by source address: on a host with several
		// addresses (or loopback aliases) connections must leave from the
		// address this node listens on and announces.
		s.client.AddDialer(torrent.NetworkDialer{Network: "tcp", Dialer: &net.Dialer{
			Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: bindIP},
		}})
	}
	return s, nil
}

// startAuthenticated starts the client with our own TCP listener and
// dialer, both bounding the bytes a socket holds unsent (sockopt.go) and
// running peerauth's handshake before any BitTorrent byte:
// the library's built-in sockets are off (DisableTCP), and it uses what
// AddListener and AddDialer give it. Connections from addresses that are
// not current members' are closed before the handshake; the library's IP
// blocklist checks them once more after it.
func (s *Swarm) startAuthenticated(cc *torrent.ClientConfig, bindIP net.IP) error {
	ln, err := net.Listen("tcp", s.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("swarm: listen on %s: %w", s.cfg.ListenAddr, err)
	}
	cc.DisableTCP = true
	cc.DialForPeerConns = false
	s.client, err = torrent.NewClient(cc)
	if err != nil {
		ln.Close()
		return fmt.Errorf("swarm: start torrent client: %w", err)
	}
	s.listener = s.cfg.PeerKeys.NewListener(lowatListener{ln}, s.cfg.Members.IsMember, &s.auth)
	s.client.AddListener(s.listener)
	d := &net.Dialer{Timeout: 5 * time.Second, Control: setNotSentLowat}
	if bindIP != nil {
		d.LocalAddr = &net.TCPAddr{IP: bindIP}
	}
	s.client.AddDialer(torrent.NetworkDialer{Network: "tcp", Dialer: peerauth.Dialer{Keys: s.cfg.PeerKeys, Dialer: d, Count: &s.auth}})
	return nil
}

// listenIP is the IP of a listen host, nil when it is empty or unspecified.
func listenIP(host string) net.IP {
	ip := net.ParseIP(host)
	if ip == nil || ip.IsUnspecified() {
		return nil
	}
	return ip
}

// clientConfig makes a private swarm: no DHT, PEX, trackers, web seeds or
// port forwarding; only members connect; plaintext TCP (the content is
// public and verified by hash, and RC4 would cost CPU).
func (s *Swarm) clientConfig(host string, port int) *torrent.ClientConfig {
	cc := torrent.NewDefaultClientConfig()
	cc.ListenHost = func(string) string { return host }
	cc.ListenPort = port
	if ip, err := netip.ParseAddr(host); err == nil {
		cc.DisableIPv6 = ip.Is4()
		cc.DisableIPv4 = ip.Is6() && !ip.Is4In6()
	}
	cc.DataDir = filepath.Join(s.cfg.DataDir, "client")
	cc.DefaultStorage = s.downloads
	cc.NoDHT = true
	// PEX stays on: it lets downloaders of one blob feed each other, and the
	// member allow-list below filters every address it brings in.
	cc.DisablePEX = false
	cc.DisableTrackers = true
	cc.NoDefaultPortForwarding = true
	cc.DisableWebseeds = true
	cc.DisableWebtorrent = true
	cc.DisableUTP = true
	cc.Seed = true
	cc.IPBlocklist = memberAllowList{members: s.cfg.Members}
	cc.HeaderObfuscationPolicy = torrent.HeaderObfuscationPolicy{}
	cc.EstablishedConnsPerTorrent = s.cfg.MaxConns
	// One connection per peer and torrent. Two downloaders that find each
	// other through the tracker both dial, and each connection is a TCP
	// flow of its own on the node's capped uplink: with both kept, a
	// rollout ran a median of 6 (up to 19) flows per node pair, some of
	// which lost 10 % of their packets and stalled for seconds in
	// retransmission backoff (docs/benchmarks.md). Both ends keep the same
	// one: the connection dialled by the peer with the lower peer ID.
	cc.DropDuplicatePeerIds = true
	cc.DialRateLimiter = rate.NewLimiter(100, 100)
	cc.KeepAliveTimeout = 20 * time.Second
	cc.MaxAllocPeerRequestDataPerConn = 4 << 20
	cc.UploadRateLimiter = limiter(s.cfg.UploadLimit, s.cfg.ChunkSize)
	if s.cfg.DownloadLimit > 0 {
		// nil, not an infinite limiter: the library reads a limiter with no
		// tokens as "downloads disabled" and dials nobody.
		cc.DownloadRateLimiter = limiter(s.cfg.DownloadLimit, s.cfg.ChunkSize)
	}
	// The library logs every piece request at debug: keep only its warnings
	// and its bans of peers that sent bad data (bans.go).
	cc.Slogger = slog.New(libraryLog{s.log.Handler()}).With("lib", "anacrolix")
	cc.Logger = alog.Default.WithFilterLevel(alog.Warning)
	cc.Callbacks.ReceivedUsefulData = append(cc.Callbacks.ReceivedUsefulData, s.received.record, s.traffic.record)
	cc.Callbacks.PeerConnClosed = s.traffic.closed
	return cc
}

// limiter returns a byte-rate limiter; its burst must hold at least one chunk
// or requests of that size are refused.
func limiter(bytesPerSecond int64, chunk int) *rate.Limiter {
	if bytesPerSecond == 0 {
		return rate.NewLimiter(rate.Inf, 0)
	}
	return rate.NewLimiter(rate.Limit(bytesPerSecond), max(int(bytesPerSecond), chunk, 1<<20))
}

// TorrentAddr is the address the client listens on (useful with port 0).
func (s *Swarm) TorrentAddr() netip.AddrPort {
	if s.listener != nil {
		ap, _ := netip.ParseAddrPort(s.listener.Addr().String())
		return ap
	}
	for _, a := range s.client.ListenAddrs() {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			return ap
		}
	}
	return netip.AddrPort{}
}

// Name labels the swarm among the registry's sources.
func (s *Swarm) Name() string { return "swarm" }

// Close stops every torrent and the client.
func (s *Swarm) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.stop)
	s.mu.Unlock()
	s.wg.Wait()
	errs := s.client.Close()
	// After the client: its accept loop ends on our listener's error only
	// once the client is marked closed.
	if s.listener != nil {
		errs = append(errs, s.listener.Close())
	}
	return errors.Join(errs...)
}

var errClosed = errors.New("swarm: closed")

// addTorrent adds a chunk's torrent to the client over st. The info bytes
// go through SetInfoBytes, which reports bad info (AddTorrentOpt with bad
// info bytes hangs instead). Caller holds s.mu.
func (s *Swarm) addTorrent(c *chunkInfo, st storage.ClientImpl) (*torrent.Torrent, error) {
	t, isNew := s.client.AddTorrentOpt(torrent.AddTorrentOpts{
		InfoHash:  c.infoHash,
		Storage:   st,
		ChunkSize: pp.Integer(s.cfg.ChunkSize),
		// Both storages know their completion; nothing needs an initial check.
		DisableInitialPieceCheck: true,
	})
	if !isNew {
		return nil, fmt.Errorf("swarm: torrent of chunk %d of %s is already in the client", c.index, c.digest)
	}
	if err := t.SetInfoBytes(c.infoBytes); err != nil {
		t.Drop()
		return nil, fmt.Errorf("swarm: add torrent of chunk %d of %s: %w", c.index, c.digest, err)
	}
	return t, nil
}
