package e2e

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/testenv"
)

const (
	// conformanceBinEnv names a prebuilt suite (make conformance builds one).
	conformanceBinEnv = "DREGISTRY_CONFORMANCE_BIN"
	// conformancePkg is the suite's command, pinned by e2e/conformance/go.mod.
	conformancePkg = "github.com/opencontainers/distribution-spec/conformance"
	// conformanceTimeout bounds one run of the suite (a few seconds on loopback).
	conformanceTimeout = 5 * time.Minute
)

// conformanceEnv switches off what the upstream (distribution 2.8) cannot
// store, so both runs exercise the same content: sha512 blobs, manifests with
// a subject (no referrers API) and non-distributable layers it rejects.
var conformanceEnv = []string{
	"OCI_TLS=disabled",
	"OCI_LOG=warn",
	"OCI_DATA_SHA512=false",
	"OCI_API_REFERRER=false",
	"OCI_DATA_SUBJECT=false",
	"OCI_DATA_SUBJECT_MISSING=false",
	"OCI_DATA_SUBJECT_LIST=false",
	"OCI_DATA_NONDISTRIBUTABLE=false",
	// A pull-through mirror keeps serving content it has verified after the
	// upstream deletes it (blobs and manifests are content-addressed, as in
	// any caching proxy), and deletes are no part of the pull API containerd
	// uses: both runs leave them out.
	"OCI_API_BLOBS_DELETE=false",
	"OCI_API_MANIFESTS_DELETE=false",
	"OCI_API_TAGS_DELETE=false",
}

// TestOCIConformance runs the distribution-spec conformance suite twice: once
// against the upstream registry alone (the baseline) and once through a
// router that sends what containerd sends a mirror (GET and HEAD of /v2/,
// manifests and blobs) to dregistry and everything else (pushes, uploads,
// deletes, tag lists) to the upstream. Every check the upstream passes must
// pass through dregistry too.
func TestOCIConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts docker-registry and dregistry and runs the conformance suite")
	}
	testenv.RequireRoot(t)
	suite := conformanceSuite(t)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(6)+":5500")
	// The suite pushes new manifests under one tag: tags are asked upstream
	// every time rather than cached for seconds.
	node := testenv.StartNode(t, testenv.NodeConfig{Name: "conformance", IP: testenv.LoopbackIP(21), Upstream: up,
		ExtraArgs: []string{"--tag-cache-ttl", "0s"}})

	baseline := runConformance(t, suite, up.Addr, "baseline")
	r := startRouter(t, testenv.LoopbackIP(22)+":5600", node.URL(), up.URL())
	mirror := runConformance(t, suite, r.addr, "mirror")

	t.Logf("conformance through dregistry: %s (%d requests to dregistry, %d to the upstream)",
		mirror.summary(), r.toMirror.Load(), r.toUpstream.Load())
	t.Logf("conformance of the upstream alone: %s", baseline.summary())
	if r.toMirror.Load() == 0 {
		t.Fatal("the router sent no request to dregistry")
	}
	if mirror.passed() < 100 {
		t.Errorf("only %d checks passed through dregistry; the suite did not run its pull workflow", mirror.passed())
	}
	var regressions, improvements []string
	for name, base := range baseline.status {
		got, ok := mirror.status[name]
		switch {
		case base == "passed" && (!ok || got != "passed"):
			regressions = append(regressions, fmt.Sprintf("%s: %s through dregistry%s", name, got, mirror.failure[name]))
		case base == "failure" && got == "passed":
			improvements = append(improvements, name)
		}
	}
	sort.Strings(regressions)
	sort.Strings(improvements)
	if len(improvements) > 0 {
		t.Logf("passed through dregistry but not on the upstream alone:\n  %s", strings.Join(improvements, "\n  "))
	}
	if len(regressions) > 0 {
		t.Errorf("%d checks the upstream passes fail through dregistry:\n  %s", len(regressions), strings.Join(regressions, "\n  "))
	}
	var shared []string
	for _, name := range mirror.failed() {
		if baseline.status[name] != "failure" {
			t.Errorf("%s fails only through dregistry (%s on the upstream alone)%s", name, baseline.status[name], mirror.failure[name])
			continue
		}
		shared = append(shared, name)
	}
	if len(shared) > 0 {
		t.Logf("failing through dregistry as on the upstream alone (the push side of distribution 2.8):\n  %s", strings.Join(shared, "\n  "))
	}
}

// conformanceSuite returns the suite binary: $DREGISTRY_CONFORMANCE_BIN, or
// one built from e2e/conformance into a temp dir.
func conformanceSuite(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(conformanceBinEnv); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
		t.Logf("$%s=%s does not exist; building the suite", conformanceBinEnv, p)
	}
	goTool := testenv.RequireBinary(t, "go")
	dir, err := filepath.Abs("conformance")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "conformance")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", bin, conformancePkg)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the conformance suite in %s: %v\n%s", dir, err, out)
	}
	return bin
}

// junitReport is the part of the suite's junit.xml we read.
type junitReport struct {
	Cases []struct {
		Name    string `xml:"name,attr"`
		Status  string `xml:"status,attr"`
		Failure *struct {
			Message string `xml:"message,attr"`
		} `xml:"failure"`
	} `xml:"testsuite>testcase"`
}

// conformanceResult maps each check to passed, failure, skipped or disabled.
type conformanceResult struct {
	status  map[string]string
	failure map[string]string
}

func (c conformanceResult) passed() int {
	n := 0
	for _, s := range c.status {
		if s == "passed" {
			n++
		}
	}
	return n
}

func (c conformanceResult) failed() []string {
	var out []string
	for name, s := range c.status {
		if s != "passed" && s != "skipped" && s != "disabled" {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func (c conformanceResult) summary() string {
	count := map[string]int{}
	for _, s := range c.status {
		count[s]++
	}
	return fmt.Sprintf("%d checks: %d passed, %d failed, %d skipped, %d disabled",
		len(c.status), count["passed"], len(c.failed()), count["skipped"], count["disabled"])
}

// runConformance runs the suite against registry (host:port) with its own
// repositories and reads its junit report. The suite's own exit status is not
// the verdict: it fails whenever the upstream does.
func runConformance(t *testing.T, suite, registry, label string) conformanceResult {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), conformanceTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, suite)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), conformanceEnv...)
	cmd.Env = append(cmd.Env,
		"OCI_REGISTRY="+registry,
		"OCI_REPO1=conformance/"+label+"1",
		"OCI_REPO2=conformance/"+label+"2",
		"OCI_RESULTS_DIR="+filepath.Join(dir, "results"),
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("conformance suite (%s): %v\n%s", label, err, out.String())
	}
	if ctx.Err() != nil {
		t.Fatalf("conformance suite (%s) did not finish within %s", label, conformanceTimeout)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "results", "junit.xml"))
	if err != nil {
		t.Fatalf("conformance suite (%s) wrote no report: %v\n%s", label, err, out.String())
	}
	var rep junitReport
	if err := xml.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("conformance report (%s): %v", label, err)
	}
	res := conformanceResult{status: map[string]string{}, failure: map[string]string{}}
	for _, c := range rep.Cases {
		res.status[c.Name] = c.Status
		if c.Failure != nil && c.Failure.Message != "" {
			res.failure[c.Name] = ": " + strings.ReplaceAll(c.Failure.Message, "\n", "; ")
		}
	}
	if len(res.status) == 0 {
		t.Fatalf("conformance suite (%s) reported no checks:\n%s", label, out.String())
	}
	return res
}

// router fronts the mirror the way containerd's hosts.toml does for pulls,
// with the upstream taking every request a mirror does not serve.
type router struct {
	addr                 string
	toMirror, toUpstream atomic.Int64
}

func startRouter(t *testing.T, addr, mirrorURL, upstreamURL string) *router {
	t.Helper()
	mirrorTarget, err := url.Parse(mirrorURL)
	if err != nil {
		t.Fatal(err)
	}
	upstreamTarget, err := url.Parse(upstreamURL)
	if err != nil {
		t.Fatal(err)
	}
	r := &router{addr: addr}
	toMirror := httputil.NewSingleHostReverseProxy(mirrorTarget)
	toUpstream := httputil.NewSingleHostReverseProxy(upstreamTarget)
	handler := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if isPull(req) {
			r.toMirror.Add(1)
			toMirror.ServeHTTP(w, req)
			return
		}
		r.toUpstream.Add(1)
		// Host stays the router's: the upstream builds upload Locations from it.
		toUpstream.ServeHTTP(w, req)
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("router: %v", err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return r
}

// isPull tells the requests containerd sends a mirror: GET or HEAD of /v2/,
// of a manifest or of a blob (not of an upload session).
func isPull(req *http.Request) bool {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return false
	}
	p := req.URL.Path
	if p == "/v2/" || p == "/v2" {
		return true
	}
	if strings.Contains(p, "/blobs/uploads/") || strings.HasSuffix(p, "/blobs/uploads") {
		return false
	}
	rest := strings.TrimPrefix(p, "/v2/")
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		return false
	}
	head := rest[:i]
	return strings.HasSuffix(head, "/manifests") || strings.HasSuffix(head, "/blobs")
}
