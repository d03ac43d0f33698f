package preheat

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// DefaultNamespace is kubelet's containerd namespace.
const DefaultNamespace = "k8s.io"

// maxBody bounds a request body; maxManifest a manifest's size, as
// registries bound it.
const (
	maxBody     = 64 << 10
	maxManifest = 4 << 20
)

// Order is what the CLI asks the coordinator (POST AdminPath).
type Order struct {
	// Ref is the image reference as the user wrote it; a name without a
	// registry is docker.io's, without a tag :latest (as kubelet reads it).
	Ref string `json:"ref"`
	// Namespace is the containerd namespace; default DefaultNamespace.
	Namespace string `json:"namespace,omitempty"`
	// Nodes is how many members to ask: 0 means every live member.
	Nodes int `json:"nodes,omitempty"`
}

// Request is what the coordinator asks one member (POST PeerPath): fetch
// Digest, resolved from Image, and name it Image in Namespace.
type Request struct {
	Image     string        `json:"image"`
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	Size      int64         `json:"size"`
	Namespace string        `json:"namespace"`
}

// Target is the descriptor of the request's index or manifest.
func (r Request) Target() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: r.MediaType, Digest: r.Digest, Size: r.Size}
}

// ParseOrder reads and checks an Order, normalizing Ref and Namespace.
func ParseOrder(body io.Reader) (Order, error) {
	var o Order
	if err := decode(body, &o); err != nil {
		return Order{}, err
	}
	ref, err := normalizeRef(o.Ref)
	if err != nil {
		return Order{}, err
	}
	o.Ref = ref
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if err := checkNamespace(o.Namespace); err != nil {
		return Order{}, err
	}
	if o.Nodes < 0 {
		return Order{}, fmt.Errorf("nodes: %d: want 0 (every live member) or a positive count", o.Nodes)
	}
	return o, nil
}

// parseRequest reads and checks a Request; the image must already be
// normalized, as the coordinator sends it.
func parseRequest(body io.Reader) (Request, error) {
	var r Request
	if err := decode(body, &r); err != nil {
		return Request{}, err
	}
	ref, err := normalizeRef(r.Image)
	if err != nil {
		return Request{}, err
	}
	if ref != r.Image {
		return Request{}, fmt.Errorf("image %q is not normalized (%q)", r.Image, ref)
	}
	if err := r.Digest.Validate(); err != nil {
		return Request{}, fmt.Errorf("digest %q: %w", r.Digest, err)
	}
	switch r.MediaType {
	case ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest,
		"application/vnd.docker.distribution.manifest.list.v2+json",
		"application/vnd.docker.distribution.manifest.v2+json":
	default:
		return Request{}, fmt.Errorf("media type %q is not an index or image manifest", r.MediaType)
	}
	if r.Size <= 0 || r.Size > maxManifest {
		return Request{}, fmt.Errorf("size %d: want 1 to %d bytes", r.Size, maxManifest)
	}
	if err := checkNamespace(r.Namespace); err != nil {
		return Request{}, err
	}
	return r, nil
}

// normalizeRef reads an image reference as kubelet does: a name without
// a registry is docker.io's, without a tag or digest :latest.
func normalizeRef(ref string) (string, error) {
	if ref == "" {
		return "", errors.New("image reference is empty")
	}
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("image reference %q: %w", ref, err)
	}
	return named.String(), nil
}

func checkNamespace(ns string) error {
	if err := identifiers.Validate(ns); err != nil {
		return fmt.Errorf("containerd namespace %q: %w", ns, err)
	}
	return nil
}

// decode reads one JSON object of at most maxBody bytes with no unknown
// fields and nothing after it.
func decode(body io.Reader, v any) error {
	b, err := io.ReadAll(io.LimitReader(body, maxBody+1))
	if err != nil {
		return fmt.Errorf("read request: %w", err)
	}
	if len(b) > maxBody {
		return fmt.Errorf("request body larger than %d bytes", maxBody)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	if dec.More() {
		return errors.New("request body: more than one JSON object")
	}
	return nil
}

// ParseNodes reads the CLI's --nodes: "all" (0) or a positive count.
func ParseNodes(s string) (int, error) {
	if s == "all" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("--nodes %q: want all or a positive number", s)
	}
	return n, nil
}
