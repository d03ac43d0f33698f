package testenv

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Served is one response of a dregistry daemon, from the debug line its
// registry handler logs per request ("msg=served"; nodes run --log-level debug).
type Served struct {
	Method, Path, NS string
	Status           int
	Source           string // "containerd", "upstream", ...; "" for errors
	Bytes            int64
	Aborted          bool
}

// Served returns every response the daemon logged, across restarts.
func (n *Node) Served(t testing.TB) []Served {
	t.Helper()
	b, err := os.ReadFile(n.LogPath)
	if err != nil {
		t.Fatalf("testenv: %s: %v", n.Name, err)
	}
	var out []Served
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		kv, err := parseLogfmt(sc.Text())
		if err != nil || kv["msg"] != "served" {
			continue
		}
		s := Served{Method: kv["method"], Path: kv["path"], NS: kv["ns"], Source: kv["source"], Aborted: kv["aborted"] == "true"}
		if s.Status, err = strconv.Atoi(kv["status"]); err != nil {
			t.Fatalf("testenv: %s: served line without a status: %q", n.Name, sc.Text())
		}
		if s.Bytes, err = strconv.ParseInt(kv["bytes"], 10, 64); err != nil {
			t.Fatalf("testenv: %s: served line without bytes: %q", n.Name, sc.Text())
		}
		out = append(out, s)
	}
	return out
}

// BytesBySource sums the body bytes of complete responses per source.
func BytesBySource(served []Served) map[string]int64 {
	sum := map[string]int64{}
	for _, s := range served {
		if !s.Aborted && s.Source != "" {
			sum[s.Source] += s.Bytes
		}
	}
	return sum
}

// parseLogfmt reads one line of slog's TextHandler: key=value pairs, values
// quoted Go-style when they hold spaces or quotes.
func parseLogfmt(line string) (map[string]string, error) {
	kv := map[string]string{}
	for line = strings.TrimSpace(line); line != ""; line = strings.TrimLeft(line, " ") {
		eq := strings.IndexByte(line, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("no key=value at %q", line)
		}
		key, rest := line[:eq], line[eq+1:]
		var val string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return nil, fmt.Errorf("value of %s: %w", key, err)
			}
			if val, err = strconv.Unquote(q); err != nil {
				return nil, err
			}
			rest = rest[len(q):]
		} else {
			end := strings.IndexByte(rest, ' ')
			if end < 0 {
				end = len(rest)
			}
			val, rest = rest[:end], rest[end:]
		}
		kv[key] = val
		line = rest
	}
	return kv, nil
}
