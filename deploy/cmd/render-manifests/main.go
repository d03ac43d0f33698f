// Command render-manifests writes the plain Kubernetes manifests rendered
// from the chart (run by `go generate` in deploy/).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/dregistry/dregistry/deploy"
)

func main() {
	out := flag.String("out", "manifests/dregistry.yaml", "file to write")
	flag.Parse()
	text, err := deploy.PlainManifests(context.Background())
	if err == nil {
		err = os.WriteFile(*out, []byte(text), 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "render-manifests:", err)
		os.Exit(1)
	}
}
