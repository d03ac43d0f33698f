//go:build tools

// Package conformance pins the OCI distribution-spec conformance suite in a
// module of its own, so the main module does not carry its dependencies. The
// suite is a command: build it with
//
//	go build -o conformance.bin github.com/opencontainers/distribution-spec/conformance
//
// in this directory; e2e.TestOCIConformance runs it against the mirror.
package conformance

import _ "github.com/opencontainers/distribution-spec/conformance"
