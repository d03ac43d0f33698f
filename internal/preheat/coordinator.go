package preheat

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/internal/writeprogress"
)

// AdminPath is the coordinator's endpoint: POST an Order, read Events.
const AdminPath = "/admin/v1/preheat"

// ResolveTimeout bounds resolving the reference through the mirror.
const ResolveTimeout = time.Minute

// Event is one line of the coordinator's stream: the first carries the
// image as resolved and the nodes asked, every other one node's Status.
// The stream ends once every node's Status is done or failed.
type Event struct {
	Image  string   `json:"image,omitempty"`
	Digest string   `json:"digest,omitempty"`
	Nodes  []string `json:"nodes,omitempty"`
	Status *Status  `json:"status,omitempty"`
}

// Member is a member the coordinator may ask.
type Member struct {
	Name     string
	HTTPAddr string // host:port of its peer endpoint
}

// CoordinatorConfig configures a Coordinator; every field but Logger is
// required.
type CoordinatorConfig struct {
	Self    string          // this node's member name
	Members func() []Member // the live members, this node included
	Runner  *Runner         // this node's own preheats
	// Resolve resolves a normalized reference through this node's mirror.
	Resolve func(ctx context.Context, ref string) (ocispec.Descriptor, error)
	// Client asks members, signing as this member; it must not time out
	// a whole response (a preheat streams for minutes).
	Client *http.Client
	Gate   *peerauth.Gate
	Logger *slog.Logger
}

// Coordinator serves AdminPath.
type Coordinator struct{ cfg CoordinatorConfig }

// Validate reports a CoordinatorConfig NewCoordinator cannot run with.
func (c CoordinatorConfig) Validate() error {
	if c.Members == nil || c.Runner == nil || c.Resolve == nil || c.Client == nil || c.Gate == nil {
		return errors.New("preheat: CoordinatorConfig needs Members, Runner, Resolve, Client and Gate")
	}
	return nil
}

// NewCoordinator checks cfg.
func NewCoordinator(cfg CoordinatorConfig) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Coordinator{cfg: cfg}, nil
}

// Handler serves AdminPath to this host and members (gate.AdmitAdmin), as
// every /admin/v1/ path: a bad order is answered 400, an image that does
// not resolve 404 or 502, before anything is asked of any member. A caller
// that stops reading loses its stream after StallTimeout.
func (c *Coordinator) Handler() http.Handler {
	return writeprogress.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !c.cfg.Gate.AdmitAdmin(w, r) {
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			jsonError(w, http.StatusMethodNotAllowed, "method not allowed: POST a preheat order")
			return
		}
		o, err := ParseOrder(r.Body)
		if err != nil {
			jsonError(w, http.StatusBadRequest, err.Error())
			return
		}
		nodes, err := c.choose(o.Nodes)
		if err != nil {
			jsonError(w, http.StatusBadRequest, err.Error())
			return
		}
		rctx, cancel := context.WithTimeout(r.Context(), ResolveTimeout)
		desc, err := c.cfg.Resolve(rctx, o.Ref)
		cancel()
		if err != nil {
			code := http.StatusBadGateway
			if errdefs.IsNotFound(err) {
				code = http.StatusNotFound
			}
			jsonError(w, code, fmt.Sprintf("resolve %s: %v", o.Ref, err))
			return
		}
		req := Request{Image: o.Ref, Digest: desc.Digest, MediaType: desc.MediaType, Size: desc.Size, Namespace: o.Namespace}
		c.run(w, r, req, nodes)
	}), StallTimeout)
}

// choose picks n members (0: all): this node first, then by name.
func (c *Coordinator) choose(n int) ([]Member, error) {
	var self []Member
	var others []Member
	for _, m := range c.cfg.Members() {
		if m.Name == c.cfg.Self {
			self = append(self, m)
		} else {
			others = append(others, m)
		}
	}
	all := append(self, others...)
	if n > len(all) {
		names := make([]string, len(all))
		for i, m := range all {
			names[i] = m.Name
		}
		return nil, fmt.Errorf("nodes: asked for %d, the cluster has %d live members (%s)", n, len(all), strings.Join(names, ", "))
	}
	if n == 0 {
		n = len(all)
	}
	return all[:n], nil
}

// run asks every node and streams their Status lines until each ended.
func (c *Coordinator) run(w http.ResponseWriter, r *http.Request, req Request, nodes []Member) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	names := make([]string, len(nodes))
	for i, m := range nodes {
		names[i] = m.Name
	}
	c.cfg.Logger.Info("preheat ordered", "image", req.Image, "digest", req.Digest, "namespace", req.Namespace, "nodes", names)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	rc := http.NewResponseController(w)
	if enc.Encode(Event{Image: req.Image, Digest: req.Digest.String(), Nodes: names}) != nil || rc.Flush() != nil {
		return
	}
	updates := make(chan Status)
	for _, m := range nodes {
		if m.Name == c.cfg.Self {
			go c.local(ctx, req, updates)
		} else {
			go c.remote(ctx, m, req, updates)
		}
	}
	for open := len(nodes); open > 0; {
		var s Status
		select {
		case <-ctx.Done():
			return // the caller left; the members' preheats go on
		case s = <-updates:
		}
		if s.State != StateRunning {
			open--
		}
		if enc.Encode(Event{Status: &s}) != nil || rc.Flush() != nil {
			return
		}
	}
}

// send hands s to run, unless the request ended.
func send(ctx context.Context, out chan<- Status, s Status) bool {
	select {
	case out <- s:
		return true
	case <-ctx.Done():
		return false
	}
}

// local reports this node's own preheat, started or joined in process.
func (c *Coordinator) local(ctx context.Context, req Request, out chan<- Status) {
	job, _ := c.cfg.Runner.Start(req)
	tick := time.NewTicker(reportInterval)
	defer tick.Stop()
	for {
		s := job.Status(c.cfg.Self)
		if !send(ctx, out, s) || s.State != StateRunning {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-job.Finished():
		case <-tick.C:
		}
	}
}

// remote asks member m and relays its Status lines; whatever ends its
// stream early (refusal, a dead connection, StallTimeout of silence) is
// reported as the member's failure.
func (c *Coordinator) remote(ctx context.Context, m Member, req Request, out chan<- Status) {
	failed := func(format string, args ...any) {
		s := Status{Node: m.Name, Image: req.Image, Digest: req.Digest.String(), Namespace: req.Namespace,
			State: StateFailed, Error: fmt.Sprintf(format, args...)}
		send(ctx, out, s)
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	body, err := json.Marshal(req)
	if err != nil {
		failed("encode request: %v", err)
		return
	}
	hr, err := http.NewRequestWithContext(rctx, http.MethodPost, "http://"+m.HTTPAddr+PeerPath, bytes.NewReader(body))
	if err != nil {
		failed("member address %q: %v", m.HTTPAddr, err)
		return
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := c.cfg.Client.Do(hr)
	if err != nil {
		failed("ask %s: %v", m.HTTPAddr, err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		failed("%s answered %s: %s", m.HTTPAddr, resp.Status, bytes.TrimSpace(msg))
		return
	}
	lines := make(chan Status)
	readErr := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var s Status
			if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
				readErr <- fmt.Errorf("bad status line from %s: %w", m.HTTPAddr, err)
				return
			}
			select {
			case lines <- s:
			case <-rctx.Done():
				return
			}
		}
		err := sc.Err()
		if err == nil {
			err = errors.New("its stream ended before the preheat did")
		}
		readErr <- err
	}()
	stall := time.NewTimer(StallTimeout)
	defer stall.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-stall.C:
			failed("no report from %s for %s", m.HTTPAddr, StallTimeout)
			return
		case err := <-readErr:
			failed("%v", err)
			return
		case s := <-lines:
			// The member names itself; the coordinator reports it by the
			// name it asked, so each node has one row.
			s.Node = m.Name
			if !send(ctx, out, s) || s.State != StateRunning {
				return
			}
			stall.Reset(StallTimeout)
		}
	}
}
