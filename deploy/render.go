package deploy

import (
	"context"
	"fmt"
	"strings"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
)

// RenderConfig says what to render. Zero fields take the defaults noted.
type RenderConfig struct {
	// ChartDir is the chart's directory. Default "helm/dregistry".
	ChartDir string
	// ReleaseName is the Helm release name. Default "dregistry".
	ReleaseName string
	// Namespace is the release namespace. Default "kube-system", where
	// host networking and hostPath volumes are allowed by Pod Security.
	Namespace string
	// KubeVersion is the Kubernetes version the chart is rendered for.
	// Default "v1.25.0", the oldest the chart's kubeVersion accepts.
	KubeVersion string
	// Values override the chart's values.yaml, as `helm -f` does.
	Values map[string]any
}

func (c RenderConfig) withDefaults() RenderConfig {
	if c.ChartDir == "" {
		c.ChartDir = "helm/dregistry"
	}
	if c.ReleaseName == "" {
		c.ReleaseName = "dregistry"
	}
	if c.Namespace == "" {
		c.Namespace = "kube-system"
	}
	if c.KubeVersion == "" {
		c.KubeVersion = "v1.25.0"
	}
	return c
}

// Render renders the chart as `helm template` does: a client-only dry-run
// install, values checked against values.schema.json, objects in Helm's
// install order. It returns the multi-document YAML stream.
func Render(ctx context.Context, cfg RenderConfig) (string, error) {
	cfg = cfg.withDefaults()
	chart, err := loader.Load(cfg.ChartDir)
	if err != nil {
		return "", fmt.Errorf("load chart %s: %w", cfg.ChartDir, err)
	}
	kubeVersion, err := chartutil.ParseKubeVersion(cfg.KubeVersion)
	if err != nil {
		return "", fmt.Errorf("kube version %q: %w", cfg.KubeVersion, err)
	}
	install := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	install.ClientOnly = true
	install.DryRun = true
	install.DryRunOption = "client"
	install.Replace = true
	install.ReleaseName = cfg.ReleaseName
	install.Namespace = cfg.Namespace
	install.KubeVersion = kubeVersion
	values := cfg.Values
	if values == nil {
		values = map[string]any{}
	}
	rel, err := install.RunWithContext(ctx, chart, values)
	if err != nil {
		return "", fmt.Errorf("render chart %s: %w", cfg.ChartDir, err)
	}
	if len(rel.Hooks) > 0 {
		return "", fmt.Errorf("render chart %s: hooks are not supported (plain manifests could not run them)", cfg.ChartDir)
	}
	return strings.TrimSpace(rel.Manifest) + "\n", nil
}

// Documents splits a YAML stream at its "---" lines into the documents
// that hold more than comments.
func Documents(stream string) []string {
	var docs []string
	var cur, body strings.Builder
	flush := func() {
		if strings.TrimSpace(body.String()) != "" {
			docs = append(docs, cur.String())
		}
		cur.Reset()
		body.Reset()
	}
	for _, line := range strings.Split(stream, "\n") {
		if strings.TrimRight(line, " \t") == "---" {
			flush()
			continue
		}
		cur.WriteString(line + "\n")
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			body.WriteString(line + "\n")
		}
	}
	flush()
	return docs
}
