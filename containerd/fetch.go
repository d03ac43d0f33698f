package containerd

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// MirrorResolver resolves and fetches images of every registry through one
// registry mirror at addr (host:port, plain HTTP): this node's own /v2/,
// so a fetch takes the path a kubelet pull takes (containerd, swarm,
// egress) and the upstream is asked only by the egress. Requests carry
// ?ns=<registry> as containerd's hosts.toml mirrors do. client bounds the
// requests; the mirror never answers 401, so no credentials are set.
func MirrorResolver(addr string, client *http.Client) remotes.Resolver {
	host := docker.RegistryHost{
		Client:       client,
		Host:         addr,
		Scheme:       "http",
		Path:         "/v2",
		Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve,
	}
	return docker.NewResolver(docker.ResolverOptions{
		Hosts: func(string) ([]docker.RegistryHost, error) { return []docker.RegistryHost{host}, nil },
	})
}

// ImageFetch is an image to put into containerd: its content for this
// node's platform and its image record. Nothing is unpacked: CRI unpacks
// an image's layers when a container is created from it, and a record
// with its content present is what kubelet checks before it pulls.
type ImageFetch struct {
	// Namespace is the containerd namespace of the record and content.
	Namespace string
	// Name is the image record's name, a normalized reference with a tag
	// (docker.io/library/busybox:1.36).
	Name string
	// Target is Name's index or manifest, already resolved: every node
	// fetches the same digest even if the tag moves meanwhile.
	Target ocispec.Descriptor
	// Resolver fetches the content (MirrorResolver).
	Resolver remotes.Resolver
	// Progress, when set, is called after each blob is stored and every
	// second, with the bytes stored (plus those of blobs being written)
	// and the bytes known so far (a manifest's children are known once it
	// is stored). It may be called from several goroutines, and a later
	// call may report fewer bytes than an earlier one.
	Progress func(done, total int64)
}

// criLabel marks records CRI created; CRI lists an image by its name, its
// repo digest and its id (the config's digest), each labelled so.
const criLabel, criManaged = "io.cri-containerd.image", "managed"

// criNamespace is where kubelet's images live.
const criNamespace = "k8s.io"

// FetchImage fetches f's content through f.Resolver into containerd for
// this node's platform (linux/amd64 on an amd64 host; other platforms of
// an index are skipped) and creates or updates the image record. In the
// k8s.io namespace it writes the records a CRI pull writes (the name, the
// repo digest and the config digest, labelled as CRI's), so kubelet finds
// the image present and does not pull it.
func (s *Store) FetchImage(ctx context.Context, f ImageFetch) error {
	if err := identifiers.Validate(f.Namespace); err != nil {
		return fmt.Errorf("namespace %q: %w", f.Namespace, err)
	}
	named, err := reference.ParseNormalizedNamed(f.Name)
	if err != nil {
		return fmt.Errorf("image name %q: %w", f.Name, err)
	}
	// Fail at once when containerd is down: a call on a broken
	// connection may otherwise wait for it to come back.
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = s.Ping(pctx)
	cancel()
	if err != nil {
		return err
	}
	ctx = namespaces.WithNamespace(ctx, f.Namespace)
	matcher := platforms.OnlyStrict(platforms.DefaultSpec())
	var done, total atomic.Int64
	total.Store(f.Target.Size)
	report := func(extra int64) {
		if f.Progress != nil {
			f.Progress(done.Load()+extra, total.Load())
		}
	}
	var mu sync.Mutex
	inflight := map[string]int64{} // ingest ref → blob size, guarded by mu
	progress := func(h images.Handler) images.Handler {
		return images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
			key := remotes.MakeRefKey(ctx, desc)
			mu.Lock()
			inflight[key] = desc.Size
			mu.Unlock()
			children, err := h.Handle(ctx, desc)
			mu.Lock()
			delete(inflight, key)
			mu.Unlock()
			if err != nil {
				return nil, err
			}
			var more int64
			for _, c := range children {
				more += c.Size
			}
			total.Add(more)
			done.Add(desc.Size)
			report(0)
			return children, nil
		})
	}
	// A large layer takes minutes: between blobs, the bytes its ingest
	// holds so far count too (what ctr's progress shows).
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-watchCtx.Done():
				return
			case <-tick.C:
			}
			mu.Lock()
			refs := maps.Clone(inflight)
			mu.Unlock()
			var extra int64
			for ref, size := range refs {
				sctx, cancel := context.WithTimeout(watchCtx, 2*time.Second)
				st, err := s.client.ContentStore().Status(sctx, ref)
				cancel()
				if err == nil {
					extra += min(max(st.Offset, 0), size)
				}
			}
			report(extra)
		}
	}()
	labels := map[string]string{}
	if f.Namespace == criNamespace {
		labels[criLabel] = criManaged
	}
	img, err := s.client.Fetch(ctx, f.Name,
		client.WithResolver(pinned{Resolver: f.Resolver, name: f.Name, target: f.Target}),
		client.WithPlatformMatcher(matcher),
		client.WithPullLabels(labels),
		client.WithImageHandlerWrapper(progress))
	s.observe(err)
	if err != nil {
		return fmt.Errorf("fetch %s into containerd namespace %s: %w", f.Name, f.Namespace, err)
	}
	if f.Namespace != criNamespace {
		return nil
	}
	config, err := images.Config(ctx, s.client.ContentStore(), img.Target, matcher)
	if err != nil {
		return fmt.Errorf("config of %s for %s: %w", f.Name, platforms.Format(platforms.DefaultSpec()), err)
	}
	is := s.client.ImageService()
	for _, name := range []string{named.Name() + "@" + img.Target.Digest.String(), config.Digest.String()} {
		rec := images.Image{Name: name, Target: img.Target, Labels: labels}
		if _, err := is.Create(ctx, rec); err != nil {
			if !errdefs.IsAlreadyExists(err) {
				return fmt.Errorf("image record %s: %w", name, err)
			}
			if _, err := is.Update(ctx, rec); err != nil {
				return fmt.Errorf("image record %s: %w", name, err)
			}
		}
	}
	return nil
}

// pinned resolves its one name to the descriptor already resolved, and
// nothing else: the tag is not asked again.
type pinned struct {
	remotes.Resolver
	name   string
	target ocispec.Descriptor
}

func (p pinned) Resolve(_ context.Context, ref string) (string, ocispec.Descriptor, error) {
	if ref != p.name {
		return "", ocispec.Descriptor{}, errors.New("resolve " + ref + ": only " + p.name + " is pinned")
	}
	return p.name, p.target, nil
}
