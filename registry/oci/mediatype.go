package oci

import (
	"encoding/json"
	"fmt"
	"mime"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker's manifest media types, still what most registries hold; served
// like their OCI counterparts.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// MaxManifestSize caps a manifest read into memory (distribution uses 4 MiB):
// every source that reads one refuses a larger one.
const MaxManifestSize = 4 << 20

// ManifestAccept is the Accept list containerd sends, for the requests a
// source makes to a registry itself.
const ManifestAccept = ocispec.MediaTypeImageIndex + ", " + ocispec.MediaTypeImageManifest + ", " +
	MediaTypeDockerManifestList + ", " + MediaTypeDockerManifest + ", */*;q=0.8"

// IsManifestType reports whether mt is a manifest or index media type we
// serve: the handler serves nothing else as a manifest.
func IsManifestType(mt string) bool {
	switch mt {
	case ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest,
		MediaTypeDockerManifestList, MediaTypeDockerManifest:
		return true
	}
	return false
}

// ContentMediaType strips parameters from a Content-Type header value; an
// unreadable one is "".
func ContentMediaType(header string) string {
	mt, _, err := mime.ParseMediaType(header)
	if err != nil {
		return ""
	}
	return mt
}

// SniffManifestType reads the media type of manifest JSON: its mediaType
// field, else inferred from its shape (an index has "manifests", an image
// manifest "config" and "layers"). Anything else is not a manifest: an image
// config is JSON without a mediaType too, and must never be served as one.
// Every source that learns a manifest's type from its bytes asks this.
func SniffManifestType(content []byte) (string, error) {
	var probe struct {
		MediaType string            `json:"mediaType"`
		Manifests json.RawMessage   `json:"manifests"`
		Config    json.RawMessage   `json:"config"`
		Layers    []json.RawMessage `json:"layers"`
	}
	if err := json.Unmarshal(content, &probe); err != nil {
		return "", fmt.Errorf("not a manifest: %w", err)
	}
	switch {
	case probe.MediaType != "":
		if !IsManifestType(probe.MediaType) {
			return "", fmt.Errorf("not a manifest: media type %q", probe.MediaType)
		}
		return probe.MediaType, nil
	case probe.Manifests != nil:
		return ocispec.MediaTypeImageIndex, nil
	case probe.Config != nil && probe.Layers != nil:
		return ocispec.MediaTypeImageManifest, nil
	}
	return "", fmt.Errorf("not a manifest: no mediaType, manifests, or config and layers")
}
