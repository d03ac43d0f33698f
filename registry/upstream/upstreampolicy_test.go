package upstream

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/dregistry/dregistry/internal/upstreampolicy"
	"github.com/dregistry/dregistry/registry/oci"
)

// counted is an upstream on loopback that counts the requests its handler
// got (a plain-HTTP server never passes an HTTPS attempt to it).
func counted(t *testing.T, fn http.HandlerFunc) (host string, hits *atomic.Int64) {
	hits = new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fn(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), hits
}

func TestUpstreamFetchesOnlyNamedRegistries(t *testing.T) {
	host, hits := counted(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	ref := oci.Ref{Registry: host, Repository: "x/y"}
	dgst := digest.FromString("x")
	for _, cfg := range []Config{
		{},
		{Allow: []string{"docker.io"}, PlainHTTP: []string{"127.0.0.1:1"}},
		{Allow: []string{"*"}, PlainHTTP: []string{"127.0.0.1:1"}}, // the wildcard is for public addresses
	} {
		u := newTestUpstream(t, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err1 := u.Resolve(ctx, ref, "v1")
		_, err2 := u.Manifest(ctx, ref, dgst)
		_, err3 := u.Blob(ctx, ref, dgst)
		cancel()
		for _, err := range []error{err1, err2, err3} {
			if !errors.Is(err, oci.ErrNotFound) {
				t.Errorf("%+v: unnamed registry: %v, want ErrNotFound", cfg, err)
			}
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("an unnamed registry got %d requests", n)
	}
}

func TestUpstreamNeverGuessesPlainHTTP(t *testing.T) {
	host, hits := counted(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	dir := t.TempDir()
	creds := filepath.Join(dir, "config.json")
	auth := base64.StdEncoding.EncodeToString([]byte("u:p"))
	if err := os.WriteFile(creds, []byte(fmt.Sprintf(`{"auths":{"http://%s/v1/":{"auth":%q}}}`, host, auth)), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]Config{
		"named by --allow-registry": {Allow: []string{host}},
		"named by its credentials":  {DockerConfig: creds},
	} {
		u := newTestUpstream(t, cfg)
		if err := u.Policy().Allows(host); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := u.Blob(ctx, oci.Ref{Registry: host, Repository: "x/y"}, digest.FromString("x"))
		cancel()
		if err == nil || errors.Is(err, oci.ErrNotFound) {
			t.Fatalf("%s: loopback registry over HTTPS answered: %v", name, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("a registry not in PlainHTTP got %d plain HTTP requests", n)
	}
}

func TestUpstreamRefusesRedirectsToInternalAddresses(t *testing.T) {
	secret := "instance-role-credentials-" + t.Name()
	internal, internalHits := counted(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(secret))
	})
	for _, tc := range []struct {
		name, target string
		plain        []string
	}{
		{"loopback over plain HTTP, not named", "http://" + internal + "/latest/meta-data", nil},
		{"loopback over HTTPS, not named", "https://" + internal + "/latest/meta-data", nil},
		{"a name resolving to loopback, not named", "https://localhost:" + strings.Split(internal, ":")[1] + "/", nil},
		{"metadata address, even named", "http://169.254.169.254/latest/meta-data", []string{"169.254.169.254"}},
		{"metadata address over IPv6, even named", "http://[fd00:ec2::254]/latest/meta-data", []string{"[fd00:ec2::254]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host, _ := counted(t, func(w http.ResponseWriter, r *http.Request) {
				if strings.Contains(r.URL.Path, "/blobs/") {
					http.Redirect(w, r, tc.target, http.StatusTemporaryRedirect)
					return
				}
				w.WriteHeader(http.StatusOK)
			})
			u := newTestUpstream(t, Config{PlainHTTP: append([]string{host}, tc.plain...)})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			b, err := u.Blob(ctx, oci.Ref{Registry: host, Repository: "x/y"}, digest.FromString(secret))
			if err == nil {
				got, rerr := readBlob(ctx, b, 0)
				t.Fatalf("redirect to %s followed: %q, %v", tc.target, got, rerr)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("the internal reply leaked into the error: %v", err)
			}
			var refused *upstreampolicy.RefusedError
			if !errors.As(err, &refused) && !errors.Is(err, upstreampolicy.ErrPlainHTTP) {
				t.Fatalf("redirect to %s: %v, want a refusal", tc.target, err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("refusal took %v", d)
			}
		})
	}
	if n := internalHits.Load(); n != 0 {
		t.Fatalf("the internal server got %d requests", n)
	}
}
