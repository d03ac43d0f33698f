// Package conformance pins the OCI distribution-spec conformance suite in a
// module of its own, so the main module does not carry its dependencies. The
// suite is a command; build it in this directory with
//
//	go build -o conformance.test github.com/opencontainers/distribution-spec/conformance
//
// e2e.TestOCIConformance runs the binary named by $DREGISTRY_CONFORMANCE_BIN,
// or builds one itself when that is unset or missing.
package conformance
