package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/dregistry/dregistry/internal/ops"
	"github.com/dregistry/dregistry/internal/peerauth"
	"github.com/dregistry/dregistry/tracker"
)

// statsFetchTimeout bounds one read of the admin endpoint.
const statsFetchTimeout = 5 * time.Second

// swarmCommand is `dregistry swarm stats`.
func swarmCommand() *cli.Command {
	return &cli.Command{
		Name:  "swarm",
		Usage: "inspect the swarm of this node",
		Subcommands: []*cli.Command{{
			Name:  "stats",
			Usage: "members, torrents and bytes by source, read from the admin endpoint",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "addr", Value: "http://127.0.0.1:5000", Usage: "base URL of the node's HTTP port"},
				&cli.BoolFlag{Name: "json", Usage: "print the admin JSON as is"},
				&cli.BoolFlag{Name: "watch", Usage: "refresh until interrupted"},
				&cli.DurationFlag{Name: "interval", Value: 2 * time.Second, Usage: "refresh interval of --watch"},
				&cli.StringFlag{Name: "cluster-key-file", Usage: "sign the request with the cluster key, to ask a node on another host (this host's node answers without)", EnvVars: envName("cluster-key-file")},
			},
			Action: func(c *cli.Context) error {
				if c.Duration("interval") <= 0 {
					return fmt.Errorf("--interval must be positive, got %s", c.Duration("interval"))
				}
				client, err := statsClient(c.String("cluster-key-file"))
				if err != nil {
					return err
				}
				return runStats(c.Context, c.App.Writer, client, c.String("addr"), c.Bool("json"), c.Bool("watch"), c.Duration("interval"))
			},
		}},
	}
}

// runStats prints one frame, or frames until ctx ends with watch.
func runStats(ctx context.Context, w io.Writer, client *http.Client, addr string, asJSON, watch bool, interval time.Duration) error {
	for {
		raw, err := fetchStats(ctx, client, addr)
		if err != nil {
			if watch && ctx.Err() != nil {
				return nil // interrupted while fetching a frame
			}
			return err
		}
		if watch {
			fmt.Fprint(w, "\033[H\033[2J") // clear the screen between frames
		}
		if asJSON {
			_, err = w.Write(raw)
		} else {
			err = printStats(w, raw)
		}
		if err != nil || !watch {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

// statsClient signs as "dregistry-cli" when given the cluster key file.
func statsClient(keyFile string) (*http.Client, error) {
	client := &http.Client{Timeout: statsFetchTimeout}
	if keyFile == "" {
		return client, nil
	}
	keys, err := tracker.LoadKeyFile(keyFile)
	if err != nil {
		return nil, err
	}
	pk, err := peerauth.New(keys)
	if err != nil {
		return nil, fmt.Errorf("cluster key file %s: %w", keyFile, err)
	}
	client.Transport = &peerauth.Transport{Keys: pk, Node: "dregistry-cli"}
	return client, nil
}

func fetchStats(ctx context.Context, client *http.Client, addr string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, statsFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(addr, "/")+"/admin/v1/stats", nil)
	if err != nil {
		return nil, fmt.Errorf("admin address %q: %w", addr, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read stats: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("read stats: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("read stats: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

func printStats(w io.Writer, raw []byte) error {
	var s ops.Stats
	if err := json.Unmarshal(raw, &s); err != nil {
		return fmt.Errorf("decode stats: %w", err)
	}
	if s.Version != ops.SchemaVersion {
		return fmt.Errorf("stats schema version %d, this client reads %d (use --json)", s.Version, ops.SchemaVersion)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "NODE %s\n\nMEMBER\tADDRESS\tROLES\tSTATE\n", s.Node)
	for _, m := range s.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.Name, m.Address, strings.Join(m.Roles, ","), m.State)
	}
	fmt.Fprint(tw, "\nDIGEST\tSIZE\tSTATE\tPROGRESS\tPEERS\tUP\tRECEIVED FROM\n")
	for _, t := range s.Torrents {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%s\n", shortDigest(t.Digest), t.Size, t.State, progressBar(t.Progress), t.Peers, t.Uploaded, receivedList(t.ReceivedFrom))
	}
	fmt.Fprint(tw, "\nSOURCE\tBYTES SERVED\n")
	sources := make([]string, 0, len(s.Totals.ServedBySource))
	for k := range s.Totals.ServedBySource {
		sources = append(sources, k)
	}
	sort.Strings(sources)
	for _, k := range sources {
		fmt.Fprintf(tw, "%s\t%d\n", k, s.Totals.ServedBySource[k])
	}
	fmt.Fprintf(tw, "\nupstream bytes saved\t%d\nupstream bytes fetched\t%d\nswarm bytes downloaded\t%d\n",
		s.Totals.UpstreamSaved, s.Totals.UpstreamFetched, s.Totals.Downloaded)
	fmt.Fprintf(tw, "swarm bytes since start\tup %d, down %d, share ratio %s\n",
		s.Totals.SwarmUploaded, s.Totals.SwarmDownloadedTotal, ratioText(s.Totals.ShareRatio))
	return tw.Flush()
}

// ratioText prints the share ratio; it is undefined (null) before anything
// was downloaded.
func ratioText(r *float64) string {
	if r == nil {
		return "- (nothing downloaded)"
	}
	return fmt.Sprintf("%.2f", *r)
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

func progressBar(p float64) string {
	p = min(max(p, 0), 1)
	n := int(p * 10)
	return fmt.Sprintf("[%s%s] %3.0f%%", strings.Repeat("#", n), strings.Repeat(".", 10-n), p*100)
}

func receivedList(from map[string]int64) string {
	names := make([]string, 0, len(from))
	for k := range from {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, k := range names {
		parts = append(parts, fmt.Sprintf("%s=%d", k, from[k]))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}
