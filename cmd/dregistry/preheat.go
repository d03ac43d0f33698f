package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/urfave/cli/v2"

	"github.com/dregistry/dregistry/containerd"
	"github.com/dregistry/dregistry/internal/ops"
	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/internal/preheat"
	"github.com/dregistry/dregistry/tracker"
)

// newPreheat builds this node's preheat runner (the member endpoint) and
// coordinator (the admin endpoint). A member fetches through its own
// mirror, the advertised --http-addr, so the swarm and the egress serve
// it as they serve a kubelet pull.
func newPreheat(ctx context.Context, cfg daemonConfig, store *containerd.Store, members *tracker.Tracker,
	peerClient *http.Client, gate *peerauth.Gate, log *slog.Logger) (*preheat.Runner, *preheat.Coordinator, error) {
	mirror, err := advertised(cfg.AdvertiseAddr, cfg.HTTPAddr, "http-addr")
	if err != nil {
		return nil, nil, err
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	// No whole-response timeout: a layer may take minutes; the mirror
	// aborts a stalled stream itself.
	mirrorClient := &http.Client{Transport: &http.Transport{
		DialContext:           dialer.DialContext,
		ResponseHeaderTimeout: time.Minute,
		IdleConnTimeout:       90 * time.Second,
	}}
	resolver := containerd.MirrorResolver(mirror.String(), mirrorClient)
	rcfg := preheat.DefaultRunnerConfig()
	rcfg.Node, rcfg.Logger = members.LocalName(), log
	rcfg.Fetch = func(ctx context.Context, req preheat.Request, progress func(done, total int64)) error {
		return store.FetchImage(ctx, containerd.ImageFetch{
			Namespace: req.Namespace, Name: req.Image, Target: req.Target(),
			Resolver: resolver, Progress: progress,
		})
	}
	runner, err := preheat.NewRunner(ctx, rcfg)
	if err != nil {
		return nil, nil, err
	}
	coord, err := preheat.NewCoordinator(preheat.CoordinatorConfig{
		Self: members.LocalName(),
		Members: func() []preheat.Member {
			var out []preheat.Member
			for _, m := range members.Members() {
				out = append(out, preheat.Member{Name: m.Name, HTTPAddr: m.HTTPAddr})
			}
			return out
		},
		Runner: runner,
		Resolve: func(ctx context.Context, ref string) (ocispec.Descriptor, error) {
			_, desc, err := resolver.Resolve(ctx, ref)
			return desc, err
		},
		Client: peerClient,
		Gate:   gate,
		Logger: log,
	})
	if err != nil {
		return nil, nil, err
	}
	return runner, coord, nil
}

// preheatStats adapts the runner's running preheats to the stats.
func preheatStats(r *preheat.Runner) func() []ops.PreheatStats {
	return func() []ops.PreheatStats {
		var out []ops.PreheatStats
		for _, s := range r.Running() {
			out = append(out, ops.PreheatStats{Image: s.Image, Digest: s.Digest, Namespace: s.Namespace,
				DoneBytes: s.DoneBytes, TotalBytes: s.TotalBytes})
		}
		return out
	}
}

// preheatCommand is `dregistry swarm preheat`.
func preheatCommand() *cli.Command {
	return &cli.Command{
		Name:      "preheat",
		Usage:     "put an image into the containerd of every live member (or N) before anything pulls it",
		ArgsUsage: "REF",
		Description: "The node at --addr resolves REF to a digest through its own mirror, then asks each member to\n" +
			"fetch that image through its own mirror (so the swarm and the egress serve it: the upstream sends\n" +
			"each blob once) into its containerd and to create the image record in --namespace (k8s.io: kubelet\n" +
			"then finds the image present and does not pull). Nothing is unpacked.\n\n" +
			"Platforms: each member fetches the platform it runs on (its daemon's GOOS/GOARCH), so the\n" +
			"platforms fetched are those present in the cluster, not every platform the index lists.\n\n" +
			"Progress is shown per node (a table redrawn on a terminal, a line per change otherwise). The exit\n" +
			"status is 0 only when every asked node holds the complete image; otherwise the failed nodes and\n" +
			"why are listed.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "addr", Value: localAdmin, Usage: "base URL of the node's HTTP port that coordinates"},
			&cli.StringFlag{Name: "namespace", Value: preheat.DefaultNamespace, Usage: "containerd namespace of the image record"},
			&cli.StringFlag{Name: "nodes", Value: "all", Usage: "how many live members to ask: all, or N (the coordinating node first, then by name)"},
			&cli.StringFlag{Name: "cluster-key-file", Usage: "sign the request with the cluster key, to ask a node on another host (this host's node answers without)", EnvVars: envName("cluster-key-file")},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("preheat takes one image reference, got %d arguments", c.NArg())
			}
			n, err := preheat.ParseNodes(c.String("nodes"))
			if err != nil {
				return err
			}
			order := preheat.Order{Ref: c.Args().First(), Namespace: c.String("namespace"), Nodes: n}
			// Check here too, so a typo costs no request.
			body, err := json.Marshal(order)
			if err != nil {
				return err
			}
			if _, err := preheat.ParseOrder(bytes.NewReader(body)); err != nil {
				return err
			}
			client, err := preheatClient(c.String("cluster-key-file"))
			if err != nil {
				return err
			}
			return runPreheat(c.Context, c.App.Writer, isTerminal(c.App.Writer), client, c.String("addr"), body)
		},
	}
}

// preheatClient is statsClient's signing without a whole-response
// timeout: the answer streams until every node is done.
func preheatClient(keyFile string) (*http.Client, error) {
	client, err := statsClient(keyFile)
	if err != nil {
		return nil, err
	}
	var base http.RoundTripper = &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		ResponseHeaderTimeout: preheat.ResolveTimeout + 10*time.Second,
	}
	if t, ok := client.Transport.(*peerauth.Transport); ok {
		t.Base = base
		base = t
	}
	return &http.Client{Transport: base}, nil
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// runPreheat posts the order and shows the stream; it fails unless every
// node reported done.
func runPreheat(ctx context.Context, w io.Writer, tty bool, client *http.Client, addr string, order []byte) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(addr, "/")+preheat.AdminPath, bytes.NewReader(order))
	if err != nil {
		return fmt.Errorf("admin address %q: %w", addr, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("preheat: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("preheat: %s: %s", resp.Status, e.Error)
		}
		return fmt.Errorf("preheat: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	v := newPreheatView(w, tty)
	events := make(chan preheat.Event)
	readErr := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var e preheat.Event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				readErr <- fmt.Errorf("preheat: bad line from %s: %w", addr, err)
				return
			}
			select {
			case events <- e:
			case <-ctx.Done():
				return
			}
		}
		readErr <- sc.Err()
	}()
	// Each node's status repeats every second: silence this long means
	// the coordinator is gone.
	stall := time.NewTimer(2 * preheat.StallTimeout)
	defer stall.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-stall.C:
			return fmt.Errorf("preheat: no report from %s for %s", addr, 2*preheat.StallTimeout)
		case err := <-readErr:
			if err != nil {
				err = fmt.Errorf("preheat: reading the answer of %s: %w", addr, err)
			}
			return v.result(err)
		case e := <-events:
			v.show(e)
			stall.Reset(2 * preheat.StallTimeout)
		}
	}
}

// preheatView shows the nodes' progress: a table redrawn on a terminal,
// otherwise a line each time a node's state changes.
type preheatView struct {
	w     io.Writer
	tty   bool
	image string
	nodes []string
	last  map[string]preheat.Status
	drawn int // lines of the table on screen
}

func newPreheatView(w io.Writer, tty bool) *preheatView {
	return &preheatView{w: w, tty: tty, last: map[string]preheat.Status{}}
}

func (v *preheatView) show(e preheat.Event) {
	if e.Status == nil {
		v.image, v.nodes = e.Image+"@"+e.Digest, e.Nodes
		fmt.Fprintf(v.w, "preheating %s on %d nodes: %s\n", v.image, len(e.Nodes), strings.Join(e.Nodes, ", "))
		return
	}
	s := *e.Status
	prev, seen := v.last[s.Node]
	v.last[s.Node] = s
	if v.tty {
		v.redraw()
		return
	}
	// A line per change of state, and per quarter of the bytes while a
	// large image runs, so a log shows it moving.
	if !seen || prev.State != s.State || s.State == preheat.StateRunning && quarter(prev) != quarter(s) {
		fmt.Fprintln(v.w, nodeLine(s))
	}
}

func (v *preheatView) redraw() {
	if v.drawn > 0 {
		fmt.Fprintf(v.w, "\033[%dA\033[J", v.drawn)
	}
	for _, n := range v.nodes {
		s, ok := v.last[n]
		if !ok {
			s = preheat.Status{Node: n, State: "asked"}
		}
		fmt.Fprintln(v.w, nodeLine(s))
	}
	v.drawn = len(v.nodes)
}

// result is the exit of the command: nil only when every node is done.
func (v *preheatView) result(readErr error) error {
	var failed []string
	for _, n := range v.nodes {
		s, ok := v.last[n]
		switch {
		case !ok:
			failed = append(failed, n+": no report")
		case s.State == preheat.StateDone:
		case s.State == preheat.StateFailed:
			failed = append(failed, n+": "+s.Error)
		default:
			failed = append(failed, n+": still "+s.State+" when the answer ended")
		}
	}
	if len(v.nodes) == 0 {
		failed = append(failed, "the coordinator named no node")
	}
	if len(failed) == 0 && readErr == nil {
		fmt.Fprintf(v.w, "preheated %s on %d of %d nodes\n", v.image, len(v.nodes), len(v.nodes))
		return nil
	}
	msg := fmt.Sprintf("preheat of %s failed on %d of %d nodes:\n  %s", v.image, len(failed), len(v.nodes), strings.Join(failed, "\n  "))
	if readErr != nil {
		msg += "\n" + readErr.Error()
	}
	return errors.New(msg)
}

// nodeLine is one node's row: name, state, progress and bytes.
func nodeLine(s preheat.Status) string {
	line := fmt.Sprintf("%-24s %-8s %s %s", s.Node, s.State, preheatBar(s), preheatBytes(s))
	if s.Error != "" {
		line += "  " + s.Error
	}
	return strings.TrimRight(line, " ")
}

func preheatBar(s preheat.Status) string {
	p := 0.0
	if s.TotalBytes > 0 {
		p = min(max(float64(s.DoneBytes)/float64(s.TotalBytes), 0), 1)
	}
	if s.State == preheat.StateDone {
		p = 1
	}
	n := int(p * 20)
	return fmt.Sprintf("[%s%s] %3.0f%%", strings.Repeat("#", n), strings.Repeat(".", 20-n), p*100)
}

// quarter is how many quarters of the known bytes are stored.
func quarter(s preheat.Status) int64 {
	if s.TotalBytes <= 0 {
		return 0
	}
	return min(4*s.DoneBytes/s.TotalBytes, 4)
}

func preheatBytes(s preheat.Status) string { return preheatBytesIn(s, humanBytes) }

func preheatBytesIn(s preheat.Status, size func(int64) string) string {
	return fmt.Sprintf("%s / %s", size(s.DoneBytes), size(s.TotalBytes))
}

// printPreheats adds the running preheats to swarm stats, when any, sizes
// printed by size.
func printPreheats(w io.Writer, list []ops.PreheatStats, size func(int64) string) {
	if len(list) == 0 {
		return
	}
	fmt.Fprint(w, "\nPREHEAT\tNAMESPACE\tPROGRESS\tBYTES\n")
	for _, p := range list {
		s := preheat.Status{State: preheat.StateRunning, DoneBytes: p.DoneBytes, TotalBytes: p.TotalBytes}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", p.Image, p.Namespace, preheatBar(s), preheatBytesIn(s, size))
	}
}
