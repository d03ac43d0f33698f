package registry

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dregistry/dregistry/registry/oci"
)

// serveManifest answers GET|HEAD /v2/<name>/manifests/<reference>.
func (h *handler) serveManifest(ex *exchange, name, reference string) {
	w, r := ex.w, ex.r
	ref, ok := h.parseRef(ex, name)
	if !ok {
		return
	}
	mref, err := oci.ParseReference(reference)
	if err != nil {
		code := codeManifestInvalid
		if strings.Contains(reference, ":") {
			code = codeDigestInvalid
		}
		writeError(w, r, http.StatusBadRequest, code, err.Error())
		return
	}
	dgst := mref.Digest
	if mref.Tag != "" {
		desc, ok := h.resolve(ex, ref, mref.Tag)
		if !ok {
			return
		}
		if r.Method == http.MethodHead && desc.Size > 0 && desc.MediaType != "" {
			// containerd's HEAD by tag needs only these three; no body fetch.
			writeManifestHeaders(w, desc.MediaType, desc.Digest, desc.Size)
			w.WriteHeader(http.StatusOK)
			return
		}
		dgst = desc.Digest
	}
	m, ok := h.fetchManifest(ex, ref, dgst)
	if !ok {
		return
	}
	writeManifestHeaders(w, m.MediaType, m.Digest, int64(len(m.Content)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(m.Content)
	}
}

func writeManifestHeaders(w http.ResponseWriter, mediaType string, dgst digest.Digest, size int64) {
	hd := w.Header()
	hd.Set("Content-Type", mediaType)
	hd.Set("Content-Length", strconv.FormatInt(size, 10))
	hd.Set("Docker-Content-Digest", dgst.String())
	hd.Set("Etag", `"`+dgst.String()+`"`)
	hd.Set("Docker-Distribution-API-Version", apiVersion)
}

// resolve turns a tag into a descriptor through TagSources; on failure it
// has answered 404.
func (h *handler) resolve(ex *exchange, ref oci.Ref, tag string) (ocispec.Descriptor, bool) {
	f, err := firstAnswer(ex.r.Context(), h.cfg.TagSources, h.cfg.LookupTimeout,
		func(ctx context.Context, src oci.Source) (ocispec.Descriptor, error) {
			desc, err := src.Resolve(ctx, ref, tag)
			if err != nil {
				return desc, err
			}
			if _, err := oci.ParseDigest(desc.Digest.String()); err != nil {
				return desc, fmt.Errorf("resolved %s:%s to a bad digest: %w", ref, tag, err)
			}
			if desc.MediaType != "" && !oci.IsManifestType(desc.MediaType) {
				return desc, fmt.Errorf("resolved %s:%s to media type %q, not a manifest", ref, tag, desc.MediaType)
			}
			return desc, nil
		}, nil)
	if err != nil {
		h.log.Debug("tag not resolved", "ref", ref.String(), "tag", tag, "err", err)
		writeError(ex.w, ex.r, http.StatusNotFound, codeManifestUnknown,
			fmt.Sprintf("manifest %s:%s unknown", ref, tag))
		return ocispec.Descriptor{}, false
	}
	f.release()
	ex.source = f.source.Name()
	return f.value, true
}

// fetchManifest finds a verified manifest through Sources; on failure it has
// answered 404.
func (h *handler) fetchManifest(ex *exchange, ref oci.Ref, dgst digest.Digest) (*oci.Manifest, bool) {
	f, err := firstAnswer(ex.r.Context(), h.cfg.Sources, h.cfg.LookupTimeout,
		func(ctx context.Context, src oci.Source) (*oci.Manifest, error) {
			m, err := src.Manifest(ctx, ref, dgst)
			if err != nil {
				return nil, err
			}
			return m, verifyManifest(m, dgst)
		}, nil)
	if err != nil {
		h.log.Debug("manifest not found", "ref", ref.String(), "digest", dgst, "err", err)
		writeError(ex.w, ex.r, http.StatusNotFound, codeManifestUnknown,
			fmt.Sprintf("manifest %s@%s unknown", ref, dgst))
		return nil, false
	}
	f.release()
	ex.source = f.source.Name()
	return f.value, true
}

// verifyManifest checks what a source returned before it is served: the
// handler trusts no source with content addressing.
func verifyManifest(m *oci.Manifest, want digest.Digest) error {
	if m == nil {
		return fmt.Errorf("source returned no manifest for %s", want)
	}
	if m.Digest != want {
		return fmt.Errorf("source returned manifest %s for %s", m.Digest, want)
	}
	if got := want.Algorithm().FromBytes(m.Content); got != want {
		return fmt.Errorf("manifest %s: content hashes to %s", want, got)
	}
	if !oci.IsManifestType(m.MediaType) {
		return fmt.Errorf("manifest %s: media type %q is not a manifest type", want, m.MediaType)
	}
	return nil
}
