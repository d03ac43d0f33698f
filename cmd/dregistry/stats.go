package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
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
				&cli.StringFlag{Name: "addr", Value: localAdmin, Usage: "base URL of the node's HTTP port"},
				&cli.BoolFlag{Name: "json", Usage: "print the admin JSON as is"},
				&cli.BoolFlag{Name: "bytes", Usage: "print sizes and rates as exact byte counts instead of KiB, MiB, GiB"},
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
				format := printHuman
				if c.Bool("json") {
					format = printJSON
				} else if c.Bool("bytes") {
					format = printBytes
				}
				return runStats(c.Context, c.App.Writer, client, c.String("addr"), format, c.Bool("watch"), c.Duration("interval"))
			},
		}, preheatCommand()},
	}
}

// statsFormat is how `swarm stats` prints.
type statsFormat int

const (
	printHuman statsFormat = iota // sizes in KiB, MiB, ...
	printBytes                    // exact byte counts
	printJSON                     // the admin JSON as is
)

// runStats prints one frame, or frames until ctx ends with watch.
func runStats(ctx context.Context, w io.Writer, client *http.Client, addr string, format statsFormat, watch bool, interval time.Duration) error {
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
		if format == printJSON {
			_, err = w.Write(raw)
		} else {
			err = printStats(w, raw, format == printBytes)
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

// printStats prints the stats as tables, sizes and rates in binary units
// unless exact.
func printStats(w io.Writer, raw []byte, exact bool) error {
	var s ops.Stats
	if err := json.Unmarshal(raw, &s); err != nil {
		return fmt.Errorf("decode stats: %w", err)
	}
	if s.Version != ops.SchemaVersion {
		return fmt.Errorf("stats schema version %d, this client reads %d (use --json)", s.Version, ops.SchemaVersion)
	}
	size, rate := humanBytes, humanRate
	if exact {
		size = func(n int64) string { return strconv.FormatInt(n, 10) }
		rate = func(r float64) string { return fmt.Sprintf("%.0f B/s", r) }
	}
	var rates ops.TrafficSample
	if s.Rates != nil {
		rates = *s.Rates
	}
	// rateOf prints "-" until the node has measured a rate.
	rateOf := func(r float64) string {
		if s.Rates == nil {
			return "-"
		}
		return rate(r)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "NODE %s\n\nMEMBER\tADDRESS\tROLES\tSTATE\n", s.Node)
	for _, m := range s.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.Name, m.Address, strings.Join(m.Roles, ","), m.State)
	}
	fmt.Fprint(tw, "\nDIGEST\tSIZE\tSTATE\tPROGRESS\tPEERS\tUP\tRECEIVED FROM\n")
	for _, t := range s.Torrents {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", shortDigest(t.Digest), size(t.Size), t.State, progressBar(t.Progress), t.Peers, size(t.Uploaded), receivedList(t.ReceivedFrom, size))
	}
	fmt.Fprintf(tw, "\nSOURCE\tBYTES SERVED\tRATE (last %s)\n", rateWindow(s.Rates))
	for _, k := range sortedKeys(s.Totals.ServedBySource, rates.Served) {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", k, size(s.Totals.ServedBySource[k]), rateOf(rates.Served[k]))
	}
	if len(s.Peers) > 0 {
		fmt.Fprintf(tw, "\nPEER\tUP\tDOWN\tUP RATE\tDOWN RATE\n")
		for _, p := range s.Peers {
			r := rates.Peers[p.Name]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Name, size(p.Uploaded), size(p.Downloaded), rateOf(r.Up), rateOf(r.Down))
		}
	}
	fmt.Fprintf(tw, "\nupstream bytes saved\t%s\nupstream bytes fetched\t%s\nswarm bytes downloaded\t%s\n",
		size(s.Totals.UpstreamSaved), size(s.Totals.UpstreamFetched), size(s.Totals.Downloaded))
	fmt.Fprintf(tw, "swarm bytes since start\tup %s, down %s, share ratio %s\n",
		size(s.Totals.SwarmUploaded), size(s.Totals.SwarmDownloadedTotal), ratioText(s.Totals.ShareRatio))
	printPreheats(tw, s.Preheats, size)
	return tw.Flush()
}

// rateWindow is the interval the rates were measured over.
func rateWindow(r *ops.TrafficSample) string {
	if r == nil {
		return "-"
	}
	return (time.Duration(r.Seconds * float64(time.Second))).Round(time.Millisecond).String()
}

// sortedKeys lists the keys of a and b once each, sorted.
func sortedKeys(a map[string]int64, b map[string]float64) []string {
	keys := make([]string, 0, len(a)+len(b))
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// humanBytes prints n in bytes below 1 KiB and otherwise in the largest
// binary unit that keeps the value at least 1, with one decimal: 1.5 MiB.
func humanBytes(n int64) string {
	if n > -1024 && n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	return scaled(float64(n), "")
}

// humanRate is humanBytes per second.
func humanRate(bytesPerSecond float64) string {
	if math.Abs(math.Round(bytesPerSecond)) < 1024 {
		return fmt.Sprintf("%.0f B/s", bytesPerSecond)
	}
	return scaled(bytesPerSecond, "/s")
}

// scaled prints v (at least 1 KiB once rounded) in the largest binary unit
// that keeps its one-decimal value below 1024: 1048575 bytes, 1023.999
// KiB, is "1.0 MiB", not "1024.0 KiB".
func scaled(v float64, suffix string) string {
	binaryUnits := [...]string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v /= 1024
	unit := 0
	for unit+1 < len(binaryUnits) && math.Abs(math.Round(v*10)/10) >= 1024 {
		v /= 1024
		unit++
	}
	return fmt.Sprintf("%.1f %s%s", v, binaryUnits[unit], suffix)
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

func receivedList(from map[string]int64, size func(int64) string) string {
	names := make([]string, 0, len(from))
	for k := range from {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, k := range names {
		parts = append(parts, k+"="+size(from[k]))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}
