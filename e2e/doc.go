// Package e2e holds the end-to-end tests of dregistry: real containerd
// daemons, a real upstream registry (docker-registry), real dregistry
// daemons on loopback addresses and real pull clients (ctr, skopeo). The
// harness they share is internal/testenv. The tests skip when root or a tool
// is missing, and fail instead when DREGISTRY_E2E=required (make test).
package e2e
