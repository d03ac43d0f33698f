package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildTimeout bounds `go build ./cmd/dregistry` on a 2-core machine with a
// cold cache.
const buildTimeout = 10 * time.Minute

// BinaryEnv names a prebuilt dregistry binary to test instead of building one.
const BinaryEnv = "DREGISTRY_BIN"

// buildDirPrefix names the per-process build directories under os.TempDir().
const buildDirPrefix = "dregistry-testbin-"

// BuildDregistry returns the path of a dregistry binary built from this
// module's ./cmd/dregistry, built once per test binary: concurrent callers
// (parallel tests) wait on a file lock and reuse the first build. $DREGISTRY_BIN,
// when set, is used as is.
func BuildDregistry(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(BinaryEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("testenv: $%s: %v", BinaryEnv, err)
		}
		return p
	}
	goTool := RequireBinary(t, "go")
	dir := filepath.Join(os.TempDir(), buildDirPrefix+strconv.Itoa(os.Getpid()))
	bin, err := buildOnce(goTool, dir)
	if err != nil {
		t.Fatalf("testenv: build dregistry: %v", err)
	}
	return bin
}

func buildOnce(goTool, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	bin := filepath.Join(dir, "dregistry")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	removeStaleBuilds(dir)
	root, err := moduleRoot(goTool)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	tmp := bin + ".tmp"
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", tmp, "./cmd/dregistry")
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/dregistry in %s: %w\n%s", root, err, out.String())
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	return bin, nil
}

// moduleRoot is the directory of the go.mod governing the test's directory.
func moduleRoot(goTool string) (string, error) {
	out, err := exec.Command(goTool, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}

// removeStaleBuilds deletes the build directories of test binaries that
// have exited, so repeated runs do not fill the temp dir.
func removeStaleBuilds(keep string) {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), buildDirPrefix+"*"))
	for _, m := range matches {
		if m == keep {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(m), buildDirPrefix))
		if err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); errors.Is(err, os.ErrNotExist) {
			_ = os.RemoveAll(m)
		}
	}
}
