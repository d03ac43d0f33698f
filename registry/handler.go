package registry

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/dregistry/dregistry/internal/writeprogress"
	"github.com/dregistry/dregistry/registry/oci"
)

// apiVersion is the header value clients (and the conformance suite) expect
// on every /v2/ answer.
const apiVersion = "registry/2.0"

// Observer learns about every response, for metrics. Served is called once
// per request, after the response ended (or was aborted, status then being
// the one already sent). ttfb is the time until the status line was written;
// total the time until the last byte was written or the request ended.
type Observer interface {
	Served(route, source string, status int, bytes int64, ttfb, total time.Duration)
}

// StreamObserver, when the Observer also is one, hears the body bytes of a
// response by source as they are written (at most every streamSegment), so
// a rate by source moves during a multi-GiB blob instead of jumping at its
// end. It is called on the handler's goroutine and must not block.
type StreamObserver interface {
	Streamed(source string, bytes int64)
}

// Config configures the pull API handler.
type Config struct {
	// Sources answer digest lookups (manifests and blobs), tried in order.
	Sources []oci.Source
	// TagSources resolve tags, tried in order: upstream first (tags are
	// mutable), then containerd's image store as the last known answer.
	TagSources []oci.Source
	// DefaultRegistry is the registry of a request without ?ns=; default "docker.io".
	DefaultRegistry string
	// LookupTimeout bounds each source until it has answered (time to first
	// byte); past it the next source is tried. Default 5s.
	LookupTimeout time.Duration
	// StallTimeout aborts a response whose source delivered no byte for this
	// long. Default 30s.
	StallTimeout time.Duration
	// Logger gets one debug line per response; default slog.Default().
	Logger *slog.Logger
	// Observer, if set, is told about every response.
	Observer Observer
	// Clients, if set, admits the requests' source addresses; others get
	// 403 DENIED. The daemon admits this host and --mirror-allow.
	Clients ClientPolicy
	// Registries, if set, says which ?ns= registries are served; others
	// get a fast 404 before any lookup, so containerd tries its next host.
	Registries RegistryPolicy
}

// ClientPolicy admits a request's source address (Clients).
type ClientPolicy interface {
	Admits(addr netip.Addr) bool
}

// RegistryPolicy says whether a registry may be served (the upstream
// client's allow-list).
type RegistryPolicy interface {
	Allows(registry string) error
}

type handler struct {
	cfg     Config
	log     *slog.Logger
	buffers sync.Pool // of *[]byte, copy buffers for streamed blobs
}

// DefaultConfig returns the handler's defaults; the caller adds the
// sources. The inner budgets of the sources derive from LookupTimeout and
// StallTimeout (egress.LookupBudget, egress.FollowStall).
func DefaultConfig() Config {
	return Config{
		DefaultRegistry: "docker.io",
		LookupTimeout:   oci.DefaultLookupTimeout,
		StallTimeout:    oci.DefaultStallTimeout,
		Logger:          slog.Default(),
	}
}

// Validate reports a Config whose timeouts or default registry cannot
// work; NewHandler takes the defaults for zero values and logs a bad
// default registry (its requests without ?ns= get 400).
func (c Config) Validate() error {
	if c.LookupTimeout <= 0 || c.StallTimeout <= 0 {
		return fmt.Errorf("registry: LookupTimeout %v and StallTimeout %v must be positive", c.LookupTimeout, c.StallTimeout)
	}
	if _, err := oci.ParseRegistry(c.DefaultRegistry, ""); err != nil {
		return fmt.Errorf("registry: default registry: %w", err)
	}
	return nil
}

// NewHandler returns the OCI Distribution pull API (mount it at /v2/).
func NewHandler(cfg Config) http.Handler {
	d := DefaultConfig()
	if cfg.DefaultRegistry == "" {
		cfg.DefaultRegistry = d.DefaultRegistry
	}
	if cfg.LookupTimeout <= 0 {
		cfg.LookupTimeout = d.LookupTimeout
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = d.StallTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = d.Logger
	}
	if _, err := oci.ParseRegistry(cfg.DefaultRegistry, ""); err != nil {
		// Requests without ?ns= will get 400 NAME_INVALID; say why once.
		cfg.Logger.Error("default registry is not a registry host", "err", err)
	}
	h := &handler{cfg: cfg, log: cfg.Logger}
	h.buffers.New = func() any { b := make([]byte, copyBufferSize); return &b }
	// A client that stops reading would pin the handler, its source's
	// reader and its buffers: a response with no write progress for the
	// stall timeout is cut.
	return writeprogress.Handler(h, cfg.StallTimeout)
}

// copyBufferSize is the chunk streamed blobs are copied in.
const copyBufferSize = 256 << 10

// Route labels for logs and the Observer.
const (
	routeBase     = "base"
	routeManifest = "manifest"
	routeBlob     = "blob"
	routeUnknown  = "unknown"
	routeDenied   = "denied"
)

// exchange is one request being answered: what the log line and the
// Observer report at the end.
type exchange struct {
	w      *recorder
	r      *http.Request
	route  string
	source string
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ex := &exchange{w: newRecorder(w, start), r: r, route: routeUnknown}
	if so, ok := h.cfg.Observer.(StreamObserver); ok {
		ex.w.streamed = func(n int64) {
			if ex.source != "" {
				so.Streamed(ex.source, n)
			}
		}
	}
	defer func() {
		// An abort (http.ErrAbortHandler) is reported, then passed on so the
		// server cuts the connection.
		p := recover()
		h.finish(ex, start, p != nil)
		if p != nil {
			panic(p)
		}
	}()
	if !h.admitted(ex) {
		return
	}
	h.dispatch(ex)
}

// admitted answers 403 DENIED to a client the Clients policy refuses: never
// 401, which would make containerd send its pull credentials.
func (h *handler) admitted(ex *exchange) bool {
	if h.cfg.Clients == nil {
		return true
	}
	ap, err := netip.ParseAddrPort(ex.r.RemoteAddr)
	if err == nil && h.cfg.Clients.Admits(ap.Addr()) {
		return true
	}
	ex.route = routeDenied
	h.log.Info("mirror request refused: not from this host or --mirror-allow", "remote", ex.r.RemoteAddr, "path", ex.r.URL.Path)
	writeError(ex.w, ex.r, http.StatusForbidden, codeDenied,
		"this registry mirror serves only its own host and the networks its operator allows (--mirror-allow)")
	return false
}

func (h *handler) finish(ex *exchange, start time.Time, aborted bool) {
	status := ex.w.status
	if status == 0 {
		status = http.StatusOK
	}
	total := time.Since(start)
	h.log.Debug("served", "method", ex.r.Method, "path", ex.r.URL.Path, "ns", ex.r.URL.Query().Get("ns"),
		"status", status, "source", ex.source, "bytes", ex.w.bytes,
		"duration", total, "aborted", aborted)
	if h.cfg.Observer != nil {
		h.cfg.Observer.Served(ex.route, ex.source, status, ex.w.bytes, ex.w.ttfb, total)
	}
}

// dispatch routes by suffix, since repository names contain slashes:
// /v2/<name>/manifests/<reference> and /v2/<name>/blobs/<digest>.
func (h *handler) dispatch(ex *exchange) {
	w, r := ex.w, ex.r
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, r, http.StatusMethodNotAllowed, codeUnsupported,
			"this registry mirror is read-only: "+r.Method+" is not supported")
		return
	}
	path := r.URL.Path
	if path == "/v2/" || path == "/v2" {
		ex.route = routeBase
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "2")
		w.Header().Set("Docker-Distribution-API-Version", apiVersion)
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = io.WriteString(w, "{}")
		}
		return
	}
	rest, ok := strings.CutPrefix(path, "/v2/")
	slash := strings.LastIndexByte(rest, '/')
	if !ok || slash < 0 {
		writeError(w, r, http.StatusNotFound, codeNameUnknown, "unknown path "+path)
		return
	}
	head, last := rest[:slash], rest[slash+1:]
	if name, ok := strings.CutSuffix(head, "/manifests"); ok {
		ex.route = routeManifest
		h.serveManifest(ex, name, last)
		return
	}
	if name, ok := strings.CutSuffix(head, "/blobs"); ok {
		ex.route = routeBlob
		h.serveBlob(ex, name, last)
		return
	}
	writeError(w, r, http.StatusNotFound, codeNameUnknown, "unknown path "+path)
}

// parseRef reads ns and name; on bad input it answers 400 and returns false.
func (h *handler) parseRef(ex *exchange, name string) (oci.Ref, bool) {
	ref, err := oci.ParseRef(ex.r.URL.Query().Get("ns"), name, h.cfg.DefaultRegistry)
	if err != nil {
		writeError(ex.w, ex.r, http.StatusBadRequest, codeNameInvalid, err.Error())
		return oci.Ref{}, false
	}
	if h.cfg.Registries != nil {
		if err := h.cfg.Registries.Allows(ref.Registry); err != nil {
			h.log.Warn("mirror request refused: registry not fetched", "registry", ref.Registry, "reason", err.Error())
			writeError(ex.w, ex.r, http.StatusNotFound, codeNameUnknown,
				fmt.Sprintf("registry %s is not one this mirror serves: %v", ref.Registry, err))
			return oci.Ref{}, false
		}
	}
	return ref, true
}
