//go:build tools

// The blank import keeps the suite in go.mod and go.sum (go mod tidy reads
// files of every build tag); the tag keeps it out of builds, since a command
// cannot be imported.
package conformance

import _ "github.com/opencontainers/distribution-spec/conformance"
