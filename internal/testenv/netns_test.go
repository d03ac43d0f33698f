package testenv

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

func TestRegistryInANetnsIsReachedOverALinkAndCutWithIt(t *testing.T) {
	if testing.Short() {
		t.Skip("creates a network namespace")
	}
	ns := NewNetns(t, "up")
	// A /30 of the benchmarking range per test process.
	sub := fmt.Sprintf("198.18.%d", os.Getpid()%256)
	link := NewLink(t, "u", nil, sub+".1/30", ns, sub+".2/30")
	reg := StartRegistryIn(t, ns, sub+".2:5000")
	img := PushImage(t, reg, "testenv/netns", "v1", 1000)

	if out, err := ns.Exec("ip", "-o", "addr", "show", link.BName); err != nil {
		t.Fatal(err)
	} else if !strings.Contains(out, sub+".2/30") {
		t.Fatalf("the namespace end lacks its address: %s", out)
	}
	blobURL := reg.URL() + "/v2/testenv/netns/blobs/" + img.Layers[0].Digest.String()
	if status, err := headStatus(blobURL, 5*time.Second); err != nil || status != http.StatusOK {
		t.Fatalf("HEAD over the link: %d, %v", status, err)
	}
	// Our end down: the guard route keeps the traffic on this host.
	if err := link.SetUp(true, false); err != nil {
		t.Fatal(err)
	}
	if out, err := runIP("route", "get", sub+".2"); err == nil {
		t.Fatalf("with the link down, %s.2 is still routed: %s", sub, out)
	}
	if _, err := headStatus(blobURL, 500*time.Millisecond); err == nil {
		t.Fatalf("HEAD answered with our end of the link down")
	}
	if err := link.SetUp(true, true); err != nil {
		t.Fatal(err)
	}
	// The namespace's end down: packets leave on the veth and are lost.
	if err := link.SetUp(false, false); err != nil {
		t.Fatal(err)
	}
	if _, err := headStatus(blobURL, 500*time.Millisecond); err == nil {
		t.Fatalf("HEAD answered with the namespace's end of the link down")
	}
	if err := link.SetUp(false, true); err != nil {
		t.Fatal(err)
	}
	// Routes come back with the link; bounded wait.
	deadline := time.Now().Add(10 * time.Second)
	for {
		status, err := headStatus(blobURL, 2*time.Second)
		if err == nil && status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("HEAD after the link came back: %d, %v", status, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func headStatus(url string, timeout time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := (&http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
