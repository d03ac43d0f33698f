package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/testenv"
)

// Issue 11: members are killed and restarted again and again while the
// others pull; no surviving node may stop answering. A lock-order
// inversion in the tracker used to wedge a node when a member failed during
// a resync: it then answered nothing, looked dead to the cluster, and the
// same could happen to the next node.
func TestMembersKilledAndRestartedDuringPullsNeverWedgeSurvivors(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: four nodes killed and restarted in turn")
	}
	testenv.RequireRoot(t)
	const (
		rounds      = 4
		answerBound = 5 * time.Second // a live node answers its health and stats within this
	)
	up := testenv.StartRegistry(t, testenv.LoopbackIP(7)+":5500")
	var refs []string
	for i := range rounds + 1 {
		img := testenv.PushImage(t, up, fmt.Sprintf("e2e/churn%d", i), "v1", 6<<20, 2<<20)
		refs = append(refs, img.Ref)
	}
	nodes := testenv.StartCluster(t, testenv.ClusterConfig{Nodes: 4, Upstream: up})

	// A prober asks every node that should be alive for /readyz and
	// /admin/v1/stats the whole time, each with a deadline.
	var mu sync.Mutex
	down := map[*testenv.Node]bool{}
	var failures []string
	ctx, stop := context.WithCancel(context.Background())
	var probing sync.WaitGroup
	probing.Add(1)
	go func() {
		defer probing.Done()
		client := &http.Client{Timeout: answerBound}
		for ctx.Err() == nil {
			for _, n := range nodes {
				mu.Lock()
				skip := down[n]
				mu.Unlock()
				if skip {
					continue
				}
				for _, path := range []string{"/readyz", "/admin/v1/stats"} {
					status, body, err := getWith(client, n.URL()+path)
					mu.Lock()
					isDown := down[n]
					mu.Unlock()
					if isDown {
						break // killed while we asked
					}
					if err != nil || status != http.StatusOK && strings.Contains(body, "stuck") {
						mu.Lock()
						failures = append(failures, fmt.Sprintf("%s %s: status %d err %v body %q", n.Name, path, status, err, firstLine(body)))
						mu.Unlock()
						// A goroutine dump in its log shows where it is wedged.
						_ = syscall.Kill(n.Pid(), syscall.SIGQUIT)
						return
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()

	for round := range rounds {
		victim := nodes[1+round%(len(nodes)-1)] // node 1 is every restart's join address
		var pulls []<-chan error
		var pullers []*testenv.Node
		for _, n := range nodes {
			if n != victim {
				pulls = append(pulls, pullAsync(t, n, refs[round]))
				pullers = append(pullers, n)
			}
		}
		time.Sleep(300 * time.Millisecond) // let the pulls reach the swarm and the egress
		mu.Lock()
		down[victim] = true
		mu.Unlock()
		victim.Kill(t)
		for i, p := range pulls {
			waitPull(t, pullers[i], p)
		}
		victim.Start(t)
		mu.Lock()
		down[victim] = false
		bad := append([]string(nil), failures...)
		mu.Unlock()
		if len(bad) > 0 {
			stop()
			probing.Wait()
			t.Fatalf("round %d: a surviving node stopped answering: %v", round, bad)
		}
	}
	// Everyone, the restarted ones included, pulls the last image and
	// still answers afterwards.
	var pulls []<-chan error
	for _, n := range nodes {
		pulls = append(pulls, pullAsync(t, n, refs[rounds]))
	}
	for i, p := range pulls {
		waitPull(t, nodes[i], p)
	}
	stop()
	probing.Wait()
	if len(failures) > 0 {
		t.Fatalf("a node stopped answering: %v", failures)
	}
	client := &http.Client{Timeout: answerBound}
	for _, n := range nodes {
		if status, body, err := getWith(client, n.URL()+"/readyz"); err != nil || status != http.StatusOK {
			t.Errorf("%s is not ready after the churn: %d %v %q", n.Name, status, err, body)
		}
	}
}

// getWith GETs url with client (which has a timeout) and returns the status
// and up to 4 KiB of the body.
func getWith(client *http.Client, url string) (int, string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	return resp.StatusCode, string(b), err
}
