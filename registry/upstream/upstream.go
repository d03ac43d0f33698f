package upstream

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"

	"github.com/dregistry/dregistry/internal/upstreampolicy"
	"github.com/dregistry/dregistry/registry/oci"
)

// Config configures the client of upstream registries: start from
// DefaultConfig and name the registries.
type Config struct {
	// Allow names the registries fetched from (host[:port], as in ?ns=):
	// the default registry and each --allow-registry; "*" allows any
	// registry on a public address. The PlainHTTP registries and those with
	// credentials in DockerConfig are named too; any other is not fetched.
	Allow []string
	// PlainHTTP lists registries reached over plain HTTP; no other
	// registry is, whatever its address.
	PlainHTTP []string
	// DockerConfig is the path of a docker config.json holding pull
	// credentials; "" pulls anonymously.
	DockerConfig string
	// Logger; default slog.Default().
	Logger *slog.Logger
	// MaxRepositories bounds the cache of authenticated transports, one per
	// (registry, repository); default 256.
	MaxRepositories int
}

// DefaultConfig returns the defaults; the caller names the registries
// (Allow, PlainHTTP) and the credentials (DockerConfig). Nothing is
// fetched from a registry nobody named.
func DefaultConfig() Config {
	return Config{
		Logger:          slog.Default(),
		MaxRepositories: 256,
	}
}

// Validate reports a Config New cannot run with: a PlainHTTP or Allow
// entry that is not host[:port] (Allow may hold "*"), or a negative
// MaxRepositories. Zero values take the defaults; New reads DockerConfig.
func (c Config) Validate() error {
	if c.MaxRepositories < 0 {
		return fmt.Errorf("upstream: MaxRepositories %d must not be negative", c.MaxRepositories)
	}
	for _, reg := range c.PlainHTTP {
		if _, err := oci.ParseRegistry(reg, ""); err != nil {
			return fmt.Errorf("plain HTTP registry: %w", err)
		}
	}
	return upstreampolicy.Config{Allow: c.Allow, PlainHTTP: c.PlainHTTP}.Validate()
}

// Client is the oci.Source that pulls from the registry a request names. It
// authenticates with the registry token flow of go-containerregistry and
// checks every byte against its digest.
type Client struct {
	cfg        Config
	log        *slog.Logger
	policy     *upstreampolicy.Policy
	keychain   authn.Keychain
	base       http.RoundTripper
	transports *transportCache
	handshakes singleflight.Group
}

// upstreamTimeout bounds connecting, the TLS handshake and waiting for
// response headers on the default transport.
const upstreamTimeout = 10 * time.Second

// New returns the upstream source. It fails on an invalid Config, an
// unreadable DockerConfig or a registry entry that is not host[:port].
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := DefaultConfig()
	if cfg.Logger == nil {
		cfg.Logger = d.Logger
	}
	if cfg.MaxRepositories == 0 {
		cfg.MaxRepositories = d.MaxRepositories
	}
	kc, err := loadKeychain(cfg.DockerConfig)
	if err != nil {
		return nil, err
	}
	withCredentials, err := kc.registries()
	if err != nil {
		return nil, err
	}
	policy, err := upstreampolicy.New(upstreampolicy.Config{
		Allow:     append(slices.Clone(cfg.Allow), withCredentials...),
		PlainHTTP: cfg.PlainHTTP,
		Logger:    cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	// No proxy from the environment: a proxy would resolve names itself,
	// out of reach of the address check at connect time.
	base := &http.Transport{
		DialContext:           policy.DialContext(net.Dialer{Timeout: upstreamTimeout, KeepAlive: 30 * time.Second}),
		TLSHandshakeTimeout:   upstreamTimeout,
		ResponseHeaderTimeout: upstreamTimeout,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   16,
		ForceAttemptHTTP2:     true,
	}
	return &Client{
		cfg:        cfg,
		log:        cfg.Logger,
		policy:     policy,
		keychain:   kc,
		base:       policy.GuardPlainHTTP(base),
		transports: newTransportCache(cfg.MaxRepositories),
	}, nil
}

// Policy is the allow-list and address policy every fetch follows; the
// mirror and the egress peer handler refuse unnamed registries with it
// before any lookup.
func (u *Client) Policy() *upstreampolicy.Policy { return u.policy }

// Name implements oci.Source.
func (u *Client) Name() string { return "upstream" }

// repository is one upstream repository with its authenticated client.
type repository struct {
	repo     name.Repository
	registry string // as the request named it
	scheme   string
	client   *http.Client
	key      string
}

func (r repository) url(kind, reference string) string {
	return fmt.Sprintf("%s://%s/v2/%s/%s/%s", r.scheme, r.repo.RegistryStr(), r.repo.RepositoryStr(), kind, reference)
}

// repository returns the client for ref, doing the auth handshake (ping,
// then a pull-scoped token when the registry asks for one) on first use.
// A registry the operator did not name is ErrNotFound, before any round
// trip: the caller answers 404 and containerd tries its next host.
func (u *Client) repository(ctx context.Context, ref oci.Ref) (repository, error) {
	if err := u.policy.Allows(ref.Registry); err != nil {
		u.log.Warn("upstream registry refused", "registry", ref.Registry, "reason", err.Error())
		return repository{}, fmt.Errorf("upstream: %w: %w", oci.ErrNotFound, err)
	}
	ctx = upstreampolicy.WithRegistry(ctx, ref.Registry)
	var opts []name.Option
	scheme := "https"
	if u.policy.PlainHTTP(ref.Registry) {
		opts = append(opts, name.Insecure)
		scheme = "http"
	}
	reg, err := name.NewRegistry(ref.Registry, opts...) // maps docker.io to index.docker.io
	if err != nil {
		return repository{}, fmt.Errorf("registry %q: %w", ref.Registry, err)
	}
	repo := reg.Repo(ref.Repository)
	key := ref.String()
	rt, ok := u.transports.get(key)
	if !ok {
		v, err, _ := u.handshakes.Do(key, func() (any, error) {
			auth, err := authn.Resolve(ctx, u.keychain, repo)
			if err != nil {
				return nil, err
			}
			rt, err := transport.NewWithContext(ctx, reg, auth, u.base, []string{repo.Scope(transport.PullScope)})
			if err != nil {
				return nil, err
			}
			u.transports.put(key, rt)
			u.log.Debug("authenticated to upstream", "repository", key)
			return rt, nil
		})
		if err != nil {
			return repository{}, fmt.Errorf("upstream %s: %w", key, err)
		}
		rt = v.(http.RoundTripper)
	}
	return repository{repo: repo, registry: ref.Registry, scheme: scheme, client: &http.Client{Transport: rt}, key: key}, nil
}

// do sends a request built here, so no header of containerd's (above all
// its Authorization) ever reaches the upstream.
func (u *Client) do(ctx context.Context, r repository, method, url string, accept string) (*http.Response, error) {
	h := http.Header{}
	if accept != "" {
		h.Set("Accept", accept)
	}
	return u.doHeader(ctx, r, method, url, h)
}

// doHeader is do with the request's headers given whole.
func (u *Client) doHeader(ctx context.Context, r repository, method, url string, h http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(upstreampolicy.WithRegistry(ctx, r.registry), method, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header = h
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		// A token the registry no longer accepts: authenticate afresh next time.
		u.transports.drop(r.key)
	}
	return resp, nil
}

// checkStatus turns a non-200 reply into an error (ErrNotFound for 404)
// and closes its body.
func checkStatus(resp *http.Response, method, url string) error {
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	defer resp.Body.Close()
	body := resp.Body
	resp.Body = io.NopCloser(io.LimitReader(body, 64<<10)) // error pages are read whole otherwise
	err := transport.CheckError(resp, http.StatusOK)
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%s %s: %w: %w", method, url, oci.ErrNotFound, err)
	}
	return fmt.Errorf("%s %s: %w", method, url, err)
}

// Resolve implements oci.Source: a HEAD of the tag, and a GET only when the
// HEAD lacks the digest, length or media type.
func (u *Client) Resolve(ctx context.Context, ref oci.Ref, tag string) (ocispec.Descriptor, error) {
	r, err := u.repository(ctx, ref)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	url := r.url("manifests", tag)
	resp, err := u.do(ctx, r, http.MethodHead, url, oci.ManifestAccept)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := checkStatus(resp, http.MethodHead, url); err != nil {
		return ocispec.Descriptor{}, err
	}
	resp.Body.Close()
	mt := oci.ContentMediaType(resp.Header.Get("Content-Type"))
	dgst, derr := oci.ParseDigest(resp.Header.Get("Docker-Content-Digest"))
	if derr == nil && resp.ContentLength > 0 && resp.ContentLength <= oci.MaxManifestSize && oci.IsManifestType(mt) {
		return ocispec.Descriptor{MediaType: mt, Digest: dgst, Size: resp.ContentLength}, nil
	}
	m, err := u.getManifest(ctx, r, tag, digest.SHA256)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return ocispec.Descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: int64(len(m.Content))}, nil
}

// Manifest implements oci.Source.
func (u *Client) Manifest(ctx context.Context, ref oci.Ref, dgst digest.Digest) (*oci.Manifest, error) {
	r, err := u.repository(ctx, ref)
	if err != nil {
		return nil, err
	}
	m, err := u.getManifest(ctx, r, dgst.String(), dgst.Algorithm())
	if err != nil {
		return nil, err
	}
	if m.Digest != dgst {
		return nil, fmt.Errorf("upstream %s: manifest %s has digest %s: %w", ref, dgst, m.Digest, oci.ErrDigestMismatch)
	}
	return m, nil
}

// getManifest GETs a manifest by tag or digest and hashes it with alg.
func (u *Client) getManifest(ctx context.Context, r repository, reference string, alg digest.Algorithm) (*oci.Manifest, error) {
	url := r.url("manifests", reference)
	resp, err := u.do(ctx, r, http.MethodGet, url, oci.ManifestAccept)
	if err != nil {
		return nil, err
	}
	if err := checkStatus(resp, http.MethodGet, url); err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.ContentLength > oci.MaxManifestSize {
		return nil, fmt.Errorf("GET %s: manifest of %d bytes, more than %d", url, resp.ContentLength, oci.MaxManifestSize)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, oci.MaxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if len(body) > oci.MaxManifestSize {
		return nil, fmt.Errorf("GET %s: manifest larger than %d bytes", url, oci.MaxManifestSize)
	}
	if resp.ContentLength >= 0 && int64(len(body)) != resp.ContentLength {
		return nil, fmt.Errorf("GET %s: got %d bytes, Content-Length said %d", url, len(body), resp.ContentLength)
	}
	mt, err := manifestTypeOf(resp.Header.Get("Content-Type"), body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return &oci.Manifest{MediaType: mt, Digest: alg.FromBytes(body), Content: body}, nil
}

// manifestTypeOf trusts a manifest Content-Type; a generic one (some
// registries and proxies send application/json) defers to the body. Anything
// else, an HTML error page for one, is refused.
func manifestTypeOf(contentType string, body []byte) (string, error) {
	mt := oci.ContentMediaType(contentType)
	if oci.IsManifestType(mt) {
		return mt, nil
	}
	switch mt {
	case "", "application/json", "application/octet-stream", "text/plain":
		return oci.SniffManifestType(body)
	}
	return "", fmt.Errorf("Content-Type %q is not a manifest type", contentType)
}

// Blob implements oci.Source: a HEAD for the size; the bytes come with Open.
// A registry that refuses HEAD (405, or a storage redirect signed for GET
// only) is asked with a GET, whose body then serves the first Open.
func (u *Client) Blob(ctx context.Context, ref oci.Ref, dgst digest.Digest) (oci.Blob, error) {
	r, err := u.repository(ctx, ref)
	if err != nil {
		return nil, err
	}
	url := r.url("blobs", dgst.String())
	resp, err := u.do(ctx, r, http.MethodHead, url, "")
	if err != nil {
		return nil, err
	}
	method := http.MethodHead
	if resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusForbidden {
		resp.Body.Close()
		method = http.MethodGet
		if resp, err = u.do(ctx, r, method, url, ""); err != nil {
			return nil, err
		}
	}
	if err := checkStatus(resp, method, url); err != nil {
		return nil, err
	}
	var pending io.ReadCloser
	if method == http.MethodGet {
		pending = resp.Body
	} else {
		resp.Body.Close()
	}
	fail := func(err error) (oci.Blob, error) {
		if pending != nil {
			pending.Close()
		}
		return nil, err
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != dgst.String() {
		return fail(fmt.Errorf("%s %s: upstream says digest %s: %w", method, url, got, oci.ErrDigestMismatch))
	}
	size := resp.ContentLength
	if size < 0 {
		return fail(fmt.Errorf("%s %s: no Content-Length", method, url))
	}
	return &upstreamBlob{u: u, r: r, url: url, dgst: dgst, size: size, pending: pending}, nil
}

var _ oci.Source = (*Client)(nil)
