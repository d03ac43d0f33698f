// Package deploy renders and checks the ways dregistry is installed: the
// Helm chart in helm/dregistry, the plain manifests rendered from it in
// manifests/, and the systemd unit in systemd/. It is its own Go module so
// that the dregistry binary never carries Helm or the Kubernetes API types.
//
// After changing the chart, re-render the plain manifests (a test fails
// while they are stale):
//
//	cd deploy && go generate ./...
package deploy

//go:generate go run ./cmd/render-manifests -out manifests/dregistry.yaml
