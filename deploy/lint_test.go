package deploy

import (
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chartutil"
)

// helm lint --strict passes with the default values, every option on, and
// the k3s example.
func TestChartLints(t *testing.T) {
	for _, file := range []string{"", "testdata/all-options.yaml", "helm/examples/k3s.yaml"} {
		t.Run("values="+file, func(t *testing.T) {
			vals := map[string]any{}
			if file != "" {
				vals = valuesFile(t, file)
			}
			kube, err := chartutil.ParseKubeVersion("v1.25.0")
			if err != nil {
				t.Fatal(err)
			}
			lint := action.NewLint()
			lint.Strict = true
			lint.Namespace = "kube-system"
			lint.KubeVersion = kube
			res := lint.Run([]string{"helm/dregistry"}, vals)
			for _, m := range res.Messages {
				t.Logf("lint: %s", m.Error())
			}
			if len(res.Errors) > 0 || action.HasWarningsOrErrors(res) {
				t.Fatalf("helm lint --strict: %v", res.Errors)
			}
		})
	}
}

// The k3s example renders, with k3s's socket and content store and no
// hosts.toml writer.
func TestChartK3sExample(t *testing.T) {
	objs := render(t, valuesFile(t, "helm/examples/k3s.yaml"))
	checkConsistent(t, objs, "kube-system")
	for _, ds := range objs.DaemonSets {
		spec := ds.Spec.Template.Spec
		if len(spec.InitContainers) != 0 {
			t.Errorf("%s writes hosts.toml on k3s, which regenerates it", ds.Name)
		}
		d := container(t, spec.Containers, "dregistry")
		if got := flag1(t, d.Args, "containerd-address"); got != "/run/k3s/containerd/containerd.sock" {
			t.Errorf("%s --containerd-address=%s", ds.Name, got)
		}
		if _, ok := volumeMount(d, "/var/lib/rancher/k3s/agent/containerd/io.containerd.content.v1.content"); !ok {
			t.Errorf("%s: k3s content store not mounted", ds.Name)
		}
	}
}
