package preheat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// States of a preheat on one node.
const (
	StateRunning = "running"
	StateDone    = "done"
	StateFailed  = "failed"
)

// Status is one node's preheat as reported: a line of either endpoint's
// stream, and an entry of the stats' running preheats.
type Status struct {
	Node      string `json:"node,omitempty"`
	Image     string `json:"image"`
	Digest    string `json:"digest"`
	Namespace string `json:"namespace"`
	State     string `json:"state"`
	// DoneBytes counts the bytes stored, including those of blobs being
	// written; TotalBytes the bytes known so far, which grows as
	// manifests are read.
	DoneBytes  int64  `json:"doneBytes"`
	TotalBytes int64  `json:"totalBytes"`
	Error      string `json:"error,omitempty"`
}

// Fetch puts req's image into this node's containerd, reporting progress
// after each blob and while one is written (a report may lag an earlier
// one). The daemon wires containerd.Store.FetchImage.
type Fetch func(ctx context.Context, req Request, progress func(done, total int64)) error

// RunnerConfig configures a Runner: start from DefaultRunnerConfig.
type RunnerConfig struct {
	Node  string // this node's name, in its Status lines
	Fetch Fetch  // required
	// Timeout bounds one preheat; default an hour.
	Timeout time.Duration
	Logger  *slog.Logger
}

// DefaultRunnerConfig returns the defaults; the caller sets Node and Fetch.
func DefaultRunnerConfig() RunnerConfig {
	return RunnerConfig{
		// Multi-GiB images over a slow upstream take minutes, a wedged
		// preheat must still end.
		Timeout: time.Hour,
		Logger:  slog.Default(),
	}
}

// Validate reports a RunnerConfig NewRunner cannot run with (a zero
// Timeout or Logger takes the default).
func (c RunnerConfig) Validate() error {
	if c.Fetch == nil {
		return errors.New("preheat: RunnerConfig.Fetch is required")
	}
	if c.Timeout < 0 {
		return fmt.Errorf("preheat: RunnerConfig.Timeout %s must not be negative", c.Timeout)
	}
	return nil
}

// Runner runs this node's preheats, one per image, digest and namespace.
// Its map is the one piece of shared state, guarded by mu; a Job's
// progress is atomics, its outcome is written once before done closes.
type Runner struct {
	cfg RunnerConfig
	ctx context.Context // the daemon's: a preheat outlives its requests

	mu   sync.Mutex
	jobs map[jobKey]*Job
}

type jobKey struct{ namespace, image, digest string }

// Job is one running (or finished) preheat.
type Job struct {
	req         Request
	done, total atomic.Int64
	finished    chan struct{}
	err         error // set before finished is closed
}

// NewRunner returns a Runner whose preheats end with ctx.
func NewRunner(ctx context.Context, cfg RunnerConfig) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := DefaultRunnerConfig()
	if cfg.Timeout == 0 {
		cfg.Timeout = d.Timeout
	}
	if cfg.Logger == nil {
		cfg.Logger = d.Logger
	}
	return &Runner{cfg: cfg, ctx: ctx, jobs: map[jobKey]*Job{}}, nil
}

// Start starts req's preheat, or joins the one running for the same
// image, digest and namespace (joined is then true).
func (r *Runner) Start(req Request) (job *Job, joined bool) {
	key := jobKey{req.Namespace, req.Image, req.Digest.String()}
	r.mu.Lock()
	defer r.mu.Unlock()
	if j, ok := r.jobs[key]; ok {
		return j, true
	}
	j := &Job{req: req, finished: make(chan struct{})}
	j.total.Store(req.Size)
	r.jobs[key] = j
	go r.run(key, j)
	return j, false
}

func (r *Runner) run(key jobKey, j *Job) {
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.Timeout)
	defer cancel()
	log := r.cfg.Logger.With("image", j.req.Image, "digest", j.req.Digest, "namespace", j.req.Namespace)
	log.Info("preheat started")
	start := time.Now()
	err := r.cfg.Fetch(ctx, j.req, func(done, total int64) {
		// Reports may cross (a blob's end and a poll of its ingest):
		// the bytes shown never go back.
		storeMax(&j.total, total)
		storeMax(&j.done, done)
	})
	r.mu.Lock()
	delete(r.jobs, key)
	r.mu.Unlock()
	j.err = err
	close(j.finished)
	if err != nil {
		log.Error("preheat failed", "err", err, "took", time.Since(start))
		return
	}
	log.Info("preheat done", "bytes", j.done.Load(), "took", time.Since(start))
}

// Running lists the preheats in progress, by image.
func (r *Runner) Running() []Status {
	r.mu.Lock()
	jobs := make([]*Job, 0, len(r.jobs))
	for _, j := range r.jobs {
		jobs = append(jobs, j)
	}
	r.mu.Unlock()
	out := make([]Status, 0, len(jobs))
	for _, j := range jobs {
		s := j.Status(r.cfg.Node)
		if s.State == StateRunning {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b Status) int {
		return strings.Compare(a.Namespace+" "+a.Image, b.Namespace+" "+b.Image)
	})
	return out
}

// Finished is closed when the preheat ended; Status then says how.
func (j *Job) Finished() <-chan struct{} { return j.finished }

// Status reports the job as node's.
func (j *Job) Status(node string) Status {
	s := Status{Node: node, Image: j.req.Image, Digest: j.req.Digest.String(), Namespace: j.req.Namespace,
		State: StateRunning, DoneBytes: j.done.Load(), TotalBytes: j.total.Load()}
	select {
	case <-j.finished:
		if j.err != nil {
			s.State, s.Error = StateFailed, j.err.Error()
		} else {
			s.State = StateDone
		}
	default:
	}
	return s
}

// storeMax raises v to n unless it is already higher.
func storeMax(v *atomic.Int64, n int64) {
	for {
		old := v.Load()
		if n <= old || v.CompareAndSwap(old, n) {
			return
		}
	}
}
