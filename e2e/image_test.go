package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/dregistry/dregistry/internal/testenv"
)

// imageBuildTimeout bounds one `go build`/`go run` on a 2-core machine.
const imageBuildTimeout = 10 * time.Minute

// Issue 6: the chart's image has a build. deploy/cmd/image packs a static
// dregistry binary into an OCI image, pushes it to a real registry, a real
// containerd pulls it, and `dregistry version` runs in it.
func TestImageBuildsPushesAndRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: builds the image and runs it in containerd")
	}
	testenv.RequireRoot(t)
	goTool := testenv.RequireBinary(t, "go")
	testenv.RequireBinary(t, "runc")
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Skipf("the image is built for amd64 and arm64, not %s", runtime.GOARCH)
	}

	// The static binary `make image` packs, for this machine's platform.
	bin := filepath.Join(t.TempDir(), "dregistry")
	goCmd(t, root, []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=" + runtime.GOARCH},
		goTool, "build", "-trimpath", "-o", bin, "./cmd/dregistry")
	want := strings.TrimSpace(goCmd(t, root, nil, bin, "version"))
	if !strings.HasPrefix(want, "dregistry ") {
		t.Fatalf("dregistry version printed %q", want)
	}

	up := testenv.StartRegistry(t, testenv.LoopbackIP(13)+":5500")
	ref := up.Addr + "/dregistry/dregistry:e2e"
	digest := strings.TrimSpace(goCmd(t, filepath.Join(root, "deploy"), nil, goTool, "run", "./cmd/image",
		"-binary", "linux/"+runtime.GOARCH+"="+bin, "-version", "e2e", "-revision", "test",
		"-push", ref, "-insecure"))
	if !strings.HasPrefix(digest, "sha256:") {
		t.Fatalf("image build printed %q, want the index digest", digest)
	}

	ctd := testenv.StartContainerd(t, "")
	if out, err := ctd.Ctr(t, "images", "pull", "--plain-http", ref); err != nil {
		t.Fatalf("containerd pull of the image: %v\n%s", err, out)
	}
	out, err := ctd.Ctr(t, "images", "list", "name=="+ref)
	if err != nil || !strings.Contains(out, digest) {
		t.Errorf("containerd lists %s without the index %s: %v\n%s", ref, digest, err, out)
	}
	// dregistry is found through the image's PATH, as the chart runs it.
	out, err = ctd.Ctr(t, "run", "--rm", ref, "dregistry-image-e2e", "dregistry", "version")
	if err != nil {
		t.Fatalf("ctr run: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(out); got != want {
		t.Errorf("in the image, dregistry version printed %q, want %q", got, want)
	}
	t.Logf("%s (%s) runs: %s", ref, digest, want)
}

// goCmd runs a command in dir with extra environment and returns its stdout.
func goCmd(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), imageBuildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}
