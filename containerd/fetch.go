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
	"github.com/containerd/containerd/v2/core/content"
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
	progress := newFetchProgress(f.Target.Size, f.Progress)
	// A large layer takes minutes: between blobs, the bytes its ingest
	// holds so far count too (what ctr's progress shows).
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go progress.watch(watchCtx, s.client.ContentStore())
	labels := map[string]string{}
	if f.Namespace == criNamespace {
		labels[criLabel] = criManaged
	}
	img, err := s.client.Fetch(ctx, f.Name,
		client.WithResolver(pinned{Resolver: f.Resolver, name: f.Name, target: f.Target}),
		client.WithPlatformMatcher(matcher),
		client.WithPullLabels(labels),
		client.WithImageHandlerWrapper(progress.wrap))
	s.observe(err)
	if err != nil {
		return fmt.Errorf("fetch %s into containerd namespace %s: %w", f.Name, f.Namespace, err)
	}
	if f.Namespace != criNamespace {
		return nil
	}
	return s.writeCRIRecords(ctx, f.Name, named, img.Target, matcher, labels)
}

// writeCRIRecords writes the image records a CRI pull writes besides the
// name: the repo digest and the config digest.
func (s *Store) writeCRIRecords(ctx context.Context, name string, named reference.Named, target ocispec.Descriptor,
	matcher platforms.MatchComparer, labels map[string]string,
) error {
	config, err := images.Config(ctx, s.client.ContentStore(), target, matcher)
	if err != nil {
		return fmt.Errorf("config of %s for %s: %w", name, platforms.Format(platforms.DefaultSpec()), err)
	}
	is := s.client.ImageService()
	for _, rn := range []string{named.Name() + "@" + target.Digest.String(), config.Digest.String()} {
		rec := images.Image{Name: rn, Target: target, Labels: labels}
		if _, err := is.Create(ctx, rec); err != nil {
			if !errdefs.IsAlreadyExists(err) {
				return fmt.Errorf("image record %s: %w", rn, err)
			}
			if _, err := is.Update(ctx, rec); err != nil {
				return fmt.Errorf("image record %s: %w", rn, err)
			}
		}
	}
	return nil
}

// fetchProgress counts a fetch's bytes for ImageFetch.Progress: the blobs
// finished, plus (watch) what the ingests in flight hold so far.
type fetchProgress struct {
	report      func(done, total int64) // nil: nobody asks
	done, total atomic.Int64

	mu       sync.Mutex
	inflight map[string]int64 // ingest ref → blob size
}

func newFetchProgress(total int64, report func(done, total int64)) *fetchProgress {
	p := &fetchProgress{report: report, inflight: map[string]int64{}}
	p.total.Store(total)
	return p
}

func (p *fetchProgress) send(extra int64) {
	if p.report != nil {
		p.report(p.done.Load()+extra, p.total.Load())
	}
}

// wrap counts each blob h handles, and its children into the total.
func (p *fetchProgress) wrap(h images.Handler) images.Handler {
	return images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		key := remotes.MakeRefKey(ctx, desc)
		p.mu.Lock()
		p.inflight[key] = desc.Size
		p.mu.Unlock()
		children, err := h.Handle(ctx, desc)
		p.mu.Lock()
		delete(p.inflight, key)
		p.mu.Unlock()
		if err != nil {
			return nil, err
		}
		var more int64
		for _, c := range children {
			more += c.Size
		}
		p.total.Add(more)
		p.done.Add(desc.Size)
		p.send(0)
		return children, nil
	})
}

// watch reports, every second until ctx ends, the bytes the ingests in
// flight hold.
func (p *fetchProgress) watch(ctx context.Context, cs content.Store) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		p.mu.Lock()
		refs := maps.Clone(p.inflight)
		p.mu.Unlock()
		var extra int64
		for ref, size := range refs {
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			st, err := cs.Status(sctx, ref)
			cancel()
			if err == nil {
				extra += min(max(st.Offset, 0), size)
			}
		}
		p.send(extra)
	}
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
