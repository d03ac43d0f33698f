// Package oci is the vocabulary every content source and the pull API
// share: what a request names (Ref, Reference and their parsers, which
// refuse bad input with an error wrapping ErrNameInvalid, ErrDigestInvalid,
// ErrReferenceInvalid or ErrRegistryInvalid), what a source answers (the
// Source interface, Blob and its capabilities SeekableBlob, FileSpans, Progressing,
// VerifyingBlob, ResumableBlob, BlobStater, and Manifest), the errors every
// layer tells apart (ErrNotFound, ErrStalled, ErrDigestMismatch,
// ErrBadContentRange), the manifest media types and SniffManifestType,
// NewVerifyingReader, the header that stops a peer request from being
// forwarded (NoForwardHeader), and the pull path's default budgets.
//
// It sits at the bottom: it imports no package of this module, and the
// handler (registry), the upstream client (registry/upstream), the swarm
// and the egress import it, so none of them needs another for its words.
// It holds no state and starts nothing.
package oci
