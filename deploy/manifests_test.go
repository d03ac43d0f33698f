package deploy

import (
	"context"
	"os"
	"testing"
)

// The committed plain manifests are what the chart renders today.
func TestManifestsUpToDate(t *testing.T) {
	want, err := PlainManifests(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(ManifestsFile)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("%s is stale: run `go generate ./...` in deploy/ and commit it", ManifestsFile)
	}
	objs, err := DecodeStrict(string(got))
	if err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, objs, "kube-system", ManifestsClusterKeySecret)
	if len(objs.Secrets) != 0 {
		t.Errorf("the plain manifests carry Secrets %+v: a published key would be everyone's key", objs.Secrets)
	}
}
