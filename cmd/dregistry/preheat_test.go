package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/preheat"
)

// coordinatorAnswering serves AdminPath with a fixed answer.
func coordinatorAnswering(t *testing.T, code int, lines ...any) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != preheat.AdminPath {
			t.Errorf("%s %s, want POST %s", r.Method, r.URL.Path, preheat.AdminPath)
		}
		w.WriteHeader(code)
		for _, l := range lines {
			_ = json.NewEncoder(w).Encode(l)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func status(node, state, why string) preheat.Event {
	return preheat.Event{Status: &preheat.Status{Node: node, State: state, DoneBytes: 1 << 20, TotalBytes: 2 << 20, Error: why}}
}

func TestPreheatCommandExitsZeroOnlyWhenEveryNodeIsDone(t *testing.T) {
	plan := preheat.Event{Image: "r/x:1", Digest: "sha256:abc", Nodes: []string{"n1", "n2"}}
	for _, tc := range []struct {
		name    string
		code    int
		lines   []any
		wantErr string // "" for success
		wantOut []string
	}{
		{"every node done", 200, []any{plan, status("n1", "running", ""), status("n2", "done", ""), status("n1", "done", "")}, "",
			[]string{"preheating r/x:1@sha256:abc on 2 nodes: n1, n2", "n1", "running", "done", "preheated r/x:1@sha256:abc on 2 of 2 nodes"}},
		{"one node failed", 200, []any{plan, status("n1", "done", ""), status("n2", "failed", "containerd at /run/c.sock: unavailable")},
			"failed on 1 of 2 nodes:\n  n2: containerd at /run/c.sock: unavailable", nil},
		{"the answer ended early", 200, []any{plan, status("n1", "done", ""), status("n2", "running", "")},
			"n2: still running when the answer ended", nil},
		{"a refused order", 400, []any{map[string]string{"error": "containerd namespace \"a/b\": invalid"}},
			"400 Bad Request: containerd namespace \"a/b\": invalid", nil},
	} {
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := runPreheat(ctx, &out, false, &http.Client{}, coordinatorAnswering(t, tc.code, tc.lines...), []byte(`{"ref":"r/x:1"}`))
		cancel()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.wantErr)
		}
		for _, w := range tc.wantOut {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%s: output lacks %q:\n%s", tc.name, w, out.String())
			}
		}
	}
}

// TestPreheatCommandRedrawsATableOnATerminal: one row per node, redrawn
// in place (cursor up over the previous rows) as reports arrive.
func TestPreheatCommandRedrawsATableOnATerminal(t *testing.T) {
	plan := preheat.Event{Image: "r/x:1", Digest: "sha256:abc", Nodes: []string{"n1", "n2"}}
	url := coordinatorAnswering(t, 200, plan, status("n1", "running", ""), status("n1", "done", ""), status("n2", "done", ""))
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := runPreheat(ctx, &out, true, &http.Client{}, url, []byte(`{"ref":"r/x:1"}`)); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "\033[2A\033[J"); n != 2 {
		t.Errorf("the 2-row table was redrawn %d times, want 2 (3 reports):\n%q", n, out.String())
	}
	if !strings.Contains(out.String(), "n2 ") || !strings.Contains(out.String(), "asked") {
		t.Errorf("first table lacks n2 as asked:\n%s", out.String())
	}
}

// TestStatsTextListsRunningPreheats: swarm stats adds a section for the
// preheats running, and none when there are none.
func TestStatsTextListsRunningPreheats(t *testing.T) {
	for _, tc := range []struct {
		preheats string
		want     []string
	}{
		{`[]`, nil},
		{`[{"image":"docker.io/library/busybox:1.36","digest":"sha256:abc","namespace":"k8s.io","doneBytes":1048576,"totalBytes":4194304}]`,
			[]string{"PREHEAT", "docker.io/library/busybox:1.36", "k8s.io", " 25%", "1.0 MiB / 4.0 MiB"}},
	} {
		raw := `{"version":1,"node":"n1","members":[],"torrents":[],"totals":{},"preheats":` + tc.preheats + `}`
		var out bytes.Buffer
		if err := printStats(&out, []byte(raw), false); err != nil {
			t.Fatal(err)
		}
		if tc.want == nil && strings.Contains(out.String(), "PREHEAT") {
			t.Errorf("no preheats, yet a section:\n%s", out.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("stats lack %q:\n%s", w, out.String())
			}
		}
	}
}
