package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Crictl runs `crictl args...` against the daemon's CRI socket, bounded by
// ctrTimeout, and returns its combined output; the error carries that
// output too. Its config file is the daemon's own, never the host's
// /etc/crictl.yaml.
func (c *Containerd) Crictl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	if !c.cri {
		t.Fatalf("testenv: containerd %s runs without CRI; crictl needs StartContainerd2", c.Address)
	}
	conf := filepath.Join(c.Dir, "crictl.yaml")
	endpoint := "unix://" + c.Address
	body := fmt.Sprintf("runtime-endpoint: %s\nimage-endpoint: %s\ntimeout: %d\n", endpoint, endpoint, int(ctrTimeout.Seconds()))
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatalf("testenv: crictl config: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ctrTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.crictl, append([]string{"--config", conf}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("crictl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// CRIImage is what `crictl inspecti` reports of an image.
type CRIImage struct {
	ID          string   `json:"id"`
	RepoTags    []string `json:"repoTags"`
	RepoDigests []string `json:"repoDigests"`
	Size        string   `json:"size"`
}

// InspectImage returns CRI's record of ref (`crictl inspecti -o json`).
func (c *Containerd) InspectImage(t testing.TB, ref string) (CRIImage, error) {
	t.Helper()
	out, err := c.Crictl(t, "inspecti", "-o", "json", ref)
	if err != nil {
		return CRIImage{}, err
	}
	var v struct {
		Status CRIImage `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return CRIImage{}, fmt.Errorf("crictl inspecti %s: %w: %s", ref, err, out)
	}
	return v.Status, nil
}
