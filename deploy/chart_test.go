package deploy

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// render renders the chart with values and decodes the result strictly.
func render(t *testing.T, values map[string]any) Objects {
	t.Helper()
	text, err := Render(context.Background(), RenderConfig{Values: values})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := DecodeStrict(text)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	return objs
}

func valuesFile(t *testing.T, name string) map[string]any {
	t.Helper()
	v, err := chartutil.ReadValuesFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// flags maps each --flag of args to its values ("" for a bare boolean).
func flags(args []string) map[string][]string {
	out := map[string][]string{}
	for _, a := range args {
		if !strings.HasPrefix(a, "--") {
			continue
		}
		name, value, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		out[name] = append(out[name], value)
	}
	return out
}

func flag1(t *testing.T, args []string, name string) string {
	t.Helper()
	v := flags(args)[name]
	if len(v) != 1 {
		t.Fatalf("--%s given %d times in %q", name, len(v), args)
	}
	return v[0]
}

func daemonSet(t *testing.T, objs Objects, name string) appsv1.DaemonSet {
	t.Helper()
	for _, ds := range objs.DaemonSets {
		if ds.Name == name {
			return ds
		}
	}
	t.Fatalf("no DaemonSet %q", name)
	return appsv1.DaemonSet{}
}

func container(t *testing.T, cs []corev1.Container, name string) corev1.Container {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

func secret(objs Objects, name string) (corev1.Secret, bool) {
	for _, s := range objs.Secrets {
		if s.Name == name {
			return s, true
		}
	}
	return corev1.Secret{}, false
}

func volumeMount(c corev1.Container, mountPath string) (corev1.VolumeMount, bool) {
	for _, m := range c.VolumeMounts {
		if m.MountPath == mountPath {
			return m, true
		}
	}
	return corev1.VolumeMount{}, false
}

func volume(spec corev1.PodSpec, name string) corev1.Volume {
	for _, v := range spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	return corev1.Volume{}
}

// checkConsistent checks what holds for every rendering: names are valid,
// every reference (mount → volume, probe → port, Service → pods and ports,
// selector → labels, volume → Secret) points at something that exists, and
// the daemon's node-level wiring is in place. existingSecrets are Secrets
// the user is told to create.
func checkConsistent(t *testing.T, objs Objects, namespace string, existingSecrets ...string) {
	t.Helper()
	type named struct{ kind, name, ns string }
	var all []named
	for _, o := range objs.DaemonSets {
		all = append(all, named{"DaemonSet", o.Name, o.Namespace})
	}
	for _, o := range objs.Services {
		all = append(all, named{"Service", o.Name, o.Namespace})
	}
	for _, o := range objs.Secrets {
		all = append(all, named{"Secret", o.Name, o.Namespace})
	}
	for _, o := range objs.ServiceAccounts {
		all = append(all, named{"ServiceAccount", o.Name, o.Namespace})
	}
	for _, o := range objs.ServiceMonitors {
		all = append(all, named{"ServiceMonitor", o.Name, o.Namespace})
	}
	for _, o := range all {
		if errs := validation.IsDNS1123Label(o.name); len(errs) > 0 {
			t.Errorf("%s %q: %v", o.kind, o.name, errs)
		}
		if o.ns != namespace {
			t.Errorf("%s %q in namespace %q, want %q", o.kind, o.name, o.ns, namespace)
		}
	}
	if len(objs.Services) != 1 {
		t.Fatalf("%d Services, want the headless gossip Service", len(objs.Services))
	}
	svc := objs.Services[0]
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s: clusterIP %q publishNotReadyAddresses %v, want headless listing not-ready daemons",
			svc.Name, svc.Spec.ClusterIP, svc.Spec.PublishNotReadyAddresses)
	}
	if len(objs.DaemonSets) == 0 {
		t.Fatal("no DaemonSet")
	}
	for _, ds := range objs.DaemonSets {
		checkDaemonSet(t, objs, ds, svc, existingSecrets)
	}
	for _, sm := range objs.ServiceMonitors {
		sel, err := metav1LabelSelector(sm)
		if err != nil {
			t.Fatal(err)
		}
		if !sel.Matches(labels.Set(svc.Labels)) {
			t.Errorf("ServiceMonitor %s selects %v, which does not match Service labels %v", sm.Name, sel, svc.Labels)
		}
		for _, ep := range sm.Spec.Endpoints {
			if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
				t.Errorf("ServiceMonitor %s scrapes port %q, which the Service lacks", sm.Name, ep.Port)
			}
		}
	}
}

func checkDaemonSet(t *testing.T, objs Objects, ds appsv1.DaemonSet, svc corev1.Service, existingSecrets []string) {
	t.Helper()
	spec := ds.Spec.Template.Spec
	podLabels := labels.Set(ds.Spec.Template.Labels)
	if !labels.SelectorFromSet(ds.Spec.Selector.MatchLabels).Matches(podLabels) || len(ds.Spec.Selector.MatchExpressions) > 0 {
		t.Errorf("DaemonSet %s: selector %v does not select its pods %v", ds.Name, ds.Spec.Selector, podLabels)
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
		t.Errorf("Service %s does not select the pods of DaemonSet %s", svc.Name, ds.Name)
	}
	if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("DaemonSet %s: hostNetwork %v dnsPolicy %q, want host networking that still resolves Services",
			ds.Name, spec.HostNetwork, spec.DNSPolicy)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("DaemonSet %s mounts a service account token the daemon never uses", ds.Name)
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		if _, dup := volumes[v.Name]; dup {
			t.Errorf("DaemonSet %s: volume %q twice", ds.Name, v.Name)
		}
		volumes[v.Name] = v
		if v.Secret != nil {
			if _, ok := secret(objs, v.Secret.SecretName); !ok && !slices.Contains(existingSecrets, v.Secret.SecretName) {
				t.Errorf("DaemonSet %s: volume %q reads Secret %q, which is neither rendered nor expected to exist", ds.Name, v.Name, v.Secret.SecretName)
			}
		}
	}
	used := map[string]bool{}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		for _, m := range c.VolumeMounts {
			if _, ok := volumes[m.Name]; !ok {
				t.Errorf("DaemonSet %s container %s mounts unknown volume %q", ds.Name, c.Name, m.Name)
			}
			used[m.Name] = true
		}
		if len(c.Resources.Requests) == 0 || len(c.Resources.Limits) == 0 {
			t.Errorf("DaemonSet %s container %s: resources %v, want requests and limits", ds.Name, c.Name, c.Resources)
		}
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil ||
			!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("DaemonSet %s container %s: securityContext %+v, want no capabilities, no escalation, read-only root", ds.Name, c.Name, sc)
		}
	}
	for name := range volumes {
		if !used[name] {
			t.Errorf("DaemonSet %s: volume %q is mounted nowhere", ds.Name, name)
		}
	}

	d := container(t, spec.Containers, "dregistry")
	if len(d.Args) == 0 || d.Args[0] != "daemon" {
		t.Fatalf("DaemonSet %s: daemon args %q", ds.Name, d.Args)
	}
	ports := map[string]corev1.ContainerPort{}
	for _, p := range d.Ports {
		if errs := validation.IsValidPortName(p.Name); len(errs) > 0 {
			t.Errorf("DaemonSet %s port %q: %v", ds.Name, p.Name, errs)
		}
		if p.HostPort != p.ContainerPort {
			t.Errorf("DaemonSet %s port %s: hostPort %d != containerPort %d (host networking needs them equal)", ds.Name, p.Name, p.HostPort, p.ContainerPort)
		}
		ports[p.Name] = p
	}
	for _, sp := range svc.Spec.Ports {
		p, ok := ports[sp.TargetPort.String()]
		if !ok || p.ContainerPort != sp.Port || p.Protocol != sp.Protocol {
			t.Errorf("Service port %s → %s: the daemon of %s has %+v", sp.Name, sp.TargetPort.String(), ds.Name, p)
		}
	}
	httpPort := ports["http"].ContainerPort
	if got := flag1(t, d.Args, "http-addr"); got != fmt.Sprintf(":%d", httpPort) {
		t.Errorf("--http-addr=%s, port http is %d", got, httpPort)
	}
	if got := flag1(t, d.Args, "gossip-addr"); got != fmt.Sprintf(":%d", ports["gossip-tcp"].ContainerPort) {
		t.Errorf("--gossip-addr=%s, port gossip-tcp is %d", got, ports["gossip-tcp"].ContainerPort)
	}
	if got := flag1(t, d.Args, "torrent-addr"); got != fmt.Sprintf(":%d", ports["torrent-tcp"].ContainerPort) {
		t.Errorf("--torrent-addr=%s, port torrent-tcp is %d", got, ports["torrent-tcp"].ContainerPort)
	}
	for probe, want := range map[*corev1.Probe]string{d.LivenessProbe: "/healthz", d.ReadinessProbe: "/readyz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != want || probe.HTTPGet.Port.String() != "http" {
			t.Errorf("DaemonSet %s: probe %+v, want GET %s on port http", ds.Name, probe, want)
		}
	}

	// --advertise-addr is the node's IP, from the downward API.
	if got := flag1(t, d.Args, "advertise-addr"); got != "$(HOST_IP)" {
		t.Errorf("--advertise-addr=%s", got)
	}
	if !slices.ContainsFunc(d.Env, func(e corev1.EnvVar) bool {
		return e.Name == "HOST_IP" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.hostIP"
	}) {
		t.Errorf("DaemonSet %s: no HOST_IP from status.hostIP in %+v", ds.Name, d.Env)
	}
	if got := flag1(t, d.Args, "node-name"); got != "$(NODE_NAME)" || !slices.ContainsFunc(d.Env, func(e corev1.EnvVar) bool {
		return e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
	}) {
		t.Errorf("DaemonSet %s: --node-name=%s, want the node's name from spec.nodeName", ds.Name, got)
	}

	// Every file flag names a path some mount provides.
	for _, f := range []string{"cluster-key-file", "registry-config", "data-dir", "containerd-address"} {
		for _, p := range flags(d.Args)[f] {
			if !mounted(d, p) {
				t.Errorf("DaemonSet %s: --%s=%s is on no volume mount", ds.Name, f, p)
			}
		}
	}
	if _, ok := flags(d.Args)["cluster-key-file"]; !ok {
		t.Errorf("DaemonSet %s: gossip is not encrypted (no --cluster-key-file)", ds.Name)
	}
	// The content store is mounted read-only at its host path, so the paths
	// containerd reports can be opened as they are.
	content, ok := volumeMount(d, strings.TrimSuffix(volume(spec, "containerd-content").HostPath.Path, "/"))
	if !ok || !content.ReadOnly || !strings.HasSuffix(content.MountPath, "/io.containerd.content.v1.content") {
		t.Errorf("DaemonSet %s: content store mount %+v, want read-only at its host path", ds.Name, content)
	}

	for _, ic := range spec.InitContainers {
		if ic.Name != "configure-containerd" {
			continue
		}
		if len(ic.Args) < 2 || ic.Args[0] != "containerd" || ic.Args[1] != "configure" {
			t.Errorf("init container args %q", ic.Args)
		}
		if got, want := flag1(t, ic.Args, "mirror"), fmt.Sprintf("http://127.0.0.1:%d", httpPort); got != want {
			t.Errorf("configure --mirror=%s, want %s (the daemon's port on the node's loopback)", got, want)
		}
		hostsDir := flag1(t, ic.Args, "hosts-dir")
		m, ok := volumeMount(ic, hostsDir)
		if !ok || m.ReadOnly || volume(spec, m.Name).HostPath == nil {
			t.Errorf("configure --hosts-dir=%s: mount %+v, want a writable hostPath", hostsDir, m)
		}
		if cfg := flag1(t, ic.Args, "containerd-config"); !mounted(ic, cfg) {
			t.Errorf("configure --containerd-config=%s is on no mount", cfg)
		}
		if sock := flag1(t, ic.Args, "containerd-address"); sock != flag1(t, d.Args, "containerd-address") || !mounted(ic, sock) {
			t.Errorf("configure --containerd-address=%s: not the daemon's or not mounted", sock)
		}
	}
}

// mounted reports whether file lies under one of c's mounts.
func mounted(c corev1.Container, file string) bool {
	for _, m := range c.VolumeMounts {
		if file == m.MountPath || strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/") {
			return true
		}
	}
	return false
}

func metav1LabelSelector(sm ServiceMonitor) (labels.Selector, error) {
	if len(sm.Spec.Selector.MatchExpressions) > 0 {
		return nil, fmt.Errorf("ServiceMonitor %s: matchExpressions not checked here", sm.Name)
	}
	return labels.SelectorFromSet(sm.Spec.Selector.MatchLabels), nil
}

func nodeAffinity(ds appsv1.DaemonSet) string {
	a := ds.Spec.Template.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return ""
	}
	var out []string
	for _, term := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, e := range term.MatchExpressions {
			out = append(out, fmt.Sprintf("%s %s %v", e.Key, e.Operator, e.Values))
		}
	}
	return strings.Join(out, "; ")
}

func TestChartDefaults(t *testing.T) {
	objs := render(t, nil)
	checkConsistent(t, objs, "kube-system")

	node, egress := daemonSet(t, objs, "dregistry"), daemonSet(t, objs, "dregistry-egress")
	if got, want := nodeAffinity(node), "dregistry.io/egress NotIn [true]"; got != want {
		t.Errorf("node DaemonSet affinity %q, want %q", got, want)
	}
	if got, want := nodeAffinity(egress), "dregistry.io/egress In [true]"; got != want {
		t.Errorf("egress DaemonSet affinity %q, want %q", got, want)
	}
	nodeArgs := container(t, node.Spec.Template.Spec.Containers, "dregistry").Args
	egressArgs := container(t, egress.Spec.Template.Spec.Containers, "dregistry").Args
	if _, ok := flags(nodeArgs)["egress"]; ok {
		t.Error("ordinary daemons run with --egress")
	}
	if v := flags(egressArgs)["egress"]; !slices.Equal(v, []string{""}) {
		t.Errorf("egress daemons: --egress given as %q", v)
	}
	for _, args := range [][]string{nodeArgs, egressArgs} {
		if got, want := flag1(t, args, "join"), "dregistry.kube-system.svc.cluster.local:7946"; got != want {
			t.Errorf("--join=%s, want the headless Service %s", got, want)
		}
		if got := flag1(t, args, "containerd-address"); got != "/run/containerd/containerd.sock" {
			t.Errorf("--containerd-address=%s", got)
		}
		if _, ok := flags(args)["registry-config"]; ok {
			t.Error("--registry-config set with no credentials configured")
		}
	}
	tol := node.Spec.Template.Spec.Tolerations
	if len(tol) != 1 || tol[0].Operator != corev1.TolerationOpExists || tol[0].Key != "" {
		t.Errorf("tolerations %+v, want one that tolerates every taint", tol)
	}
	configure := container(t, node.Spec.Template.Spec.InitContainers, "configure-containerd")
	if got := flags(configure.Args)["registry"]; len(got) != 0 {
		t.Errorf("configure --registry %q, want none (every registry through _default)", got)
	}
	if v := volume(node.Spec.Template.Spec, "containerd-hosts"); v.HostPath == nil || v.HostPath.Path != "/etc/containerd/certs.d" {
		t.Errorf("hosts dir volume %+v", v)
	}

	// No key given: the chart generates one 32-byte key.
	key, ok := secret(objs, "dregistry-cluster-key")
	if !ok {
		t.Fatal("no generated cluster key Secret")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(key.Data["keys"])))
	if err != nil || len(raw) != 32 {
		t.Errorf("generated key %q: %d bytes, %v; want 32 bytes of base64", key.Data["keys"], len(raw), err)
	}
	if len(objs.ServiceMonitors) != 0 {
		t.Error("ServiceMonitor rendered while disabled")
	}
	if len(objs.ServiceAccounts) != 1 || *objs.ServiceAccounts[0].AutomountServiceAccountToken {
		t.Errorf("ServiceAccounts %+v, want one without a token", objs.ServiceAccounts)
	}
}

func TestChartAllOptions(t *testing.T) {
	objs := render(t, valuesFile(t, "testdata/all-options.yaml"))
	checkConsistent(t, objs, "kube-system")

	node, egress := daemonSet(t, objs, "dregistry-p2p"), daemonSet(t, objs, "dregistry-p2p-egress")
	if got, want := nodeAffinity(egress), "example.com/dregistry-role In [egress]"; got != want {
		t.Errorf("egress affinity %q, want %q", got, want)
	}
	d := container(t, node.Spec.Template.Spec.Containers, "dregistry")
	if d.Image != "registry.example.internal/dregistry:1.2.3" || d.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("image %s (%s)", d.Image, d.ImagePullPolicy)
	}
	want := map[string]string{
		"http-addr": ":5055", "gossip-addr": ":7947", "torrent-addr": ":6882",
		"join":                  "10.0.0.1:7947,seed.example.internal:7947",
		"containerd-address":    "/run/k3s/containerd/containerd.sock",
		"containerd-namespaces": "k8s.io,moby",
		"default-registry":      "ghcr.io",
		"upstream-plain-http":   "registry.local:5000",
		"allow-registry":        "quay.io,registry.k8s.io",
		"mirror-allow":          "10.244.0.0/16",
		"data-dir":              "/var/lib/dregistry",
		"cache-size":            "20GiB",
		"lookup-timeout":        "2500ms",
		"stall-timeout":         "1m",
		"abandon-timeout":       "90s",
		"tag-cache-ttl":         "0s",
		"reconnect-interval":    "30s",
		"reconnect-timeout":     "6h",
		"upload-limit":          "104857600",
		"download-limit":        "209715200",
		"max-conns":             "80",
		"node-name":             "$(NODE_NAME)",
	}
	for f, v := range want {
		if got := flag1(t, d.Args, f); got != v {
			t.Errorf("--%s=%s, want %s", f, got, v)
		}
	}
	// extraArgs come last, so they win over the chart's own flags.
	if last := d.Args[len(d.Args)-1]; last != "--log-level=warn" {
		t.Errorf("last arg %q, want the extra arg", last)
	}
	if v := volume(node.Spec.Template.Spec, "data"); v.HostPath == nil || v.HostPath.Path != "/data/dregistry" {
		t.Errorf("data volume %+v", v)
	}
	if _, ok := volumeMount(d, "/var/lib/rancher/k3s/agent/containerd/io.containerd.content.v1.content"); !ok {
		t.Errorf("k3s content store not mounted: %+v", d.VolumeMounts)
	}
	if d.Resources.Limits.Memory().String() != "512Mi" {
		t.Errorf("daemon memory limit %s", d.Resources.Limits.Memory())
	}
	if e := container(t, egress.Spec.Template.Spec.Containers, "dregistry"); e.Resources.Limits.Memory().String() != "4Gi" {
		t.Errorf("egress memory limit %s", e.Resources.Limits.Memory())
	}

	configure := container(t, node.Spec.Template.Spec.InitContainers, "configure-containerd")
	if got := flags(configure.Args)["registry"]; !slices.Equal(got, []string{"docker.io", "ghcr.io", "registry.local:5000"}) {
		t.Errorf("configure --registry %q", got)
	}
	if got := flags(configure.Args)["plain-http"]; !slices.Equal(got, []string{"registry.local:5000"}) {
		t.Errorf("configure --plain-http %q", got)
	}
	if got := flag1(t, configure.Args, "containerd-config"); got != "/host/etc/containerd/config.toml.tmpl" {
		t.Errorf("configure --containerd-config=%s", got)
	}

	// Credentials: a dockerconfigjson Secret, mounted on egress nodes only.
	auth, ok := secret(objs, "dregistry-p2p-registry-auth")
	if !ok || auth.Type != corev1.SecretTypeDockerConfigJson {
		t.Fatalf("registry auth Secret %+v", auth)
	}
	var cfg struct {
		Auths map[string]struct{ Auth string } `json:"auths"`
	}
	if err := json.Unmarshal(auth.Data[corev1.DockerConfigJsonKey], &cfg); err != nil || cfg.Auths["ghcr.io"].Auth == "" {
		t.Errorf("registry auth %s: %v", auth.Data[corev1.DockerConfigJsonKey], err)
	}
	if _, ok := flags(d.Args)["registry-config"]; ok {
		t.Error("credentials mounted on ordinary nodes despite egressOnly")
	}
	if got := flag1(t, container(t, egress.Spec.Template.Spec.Containers, "dregistry").Args, "registry-config"); path.Base(got) != "config.json" {
		t.Errorf("egress --registry-config=%s", got)
	}

	key, ok := secret(objs, "dregistry-p2p-cluster-key")
	if !ok || !strings.Contains(string(key.Data["gossip-keys"]), "AAECAwQFBgcICQoLDA0ODw==") {
		t.Errorf("cluster key Secret %+v, want the given key lines", key)
	}
	if items := volume(node.Spec.Template.Spec, "cluster-key").Secret.Items; len(items) != 1 || items[0].Key != "gossip-keys" {
		t.Errorf("cluster key volume items %+v", items)
	}

	spec := node.Spec.Template.Spec
	if spec.PriorityClassName != "system-node-critical" || spec.ServiceAccountName != "dregistry-daemon" ||
		len(spec.ImagePullSecrets) != 1 || spec.NodeSelector["kubernetes.io/arch"] != "amd64" ||
		*spec.TerminationGracePeriodSeconds != 60 || node.Spec.Template.Labels["team"] != "platform" ||
		node.Spec.Template.Annotations["example.com/scrape"] != "true" {
		t.Errorf("pod spec options not applied: %+v", spec)
	}
	if !slices.ContainsFunc(d.Env, func(e corev1.EnvVar) bool { return e.Name == "GODEBUG" && e.Value == "http2client=0" }) {
		t.Errorf("extraEnv not applied: %+v", d.Env)
	}

	if len(objs.ServiceMonitors) != 1 {
		t.Fatalf("%d ServiceMonitors, want 1", len(objs.ServiceMonitors))
	}
	sm := objs.ServiceMonitors[0]
	if sm.Labels["release"] != "prometheus" || len(sm.Spec.Endpoints) != 1 ||
		sm.Spec.Endpoints[0].Path != "/metrics" || sm.Spec.Endpoints[0].Interval != "15s" {
		t.Errorf("ServiceMonitor %+v", sm)
	}
}

func TestChartExistingSecrets(t *testing.T) {
	objs := render(t, map[string]any{
		"cluster":  map[string]any{"key": map[string]any{"existingSecret": "gossip"}},
		"upstream": map[string]any{"auth": map[string]any{"existingSecret": "pull-creds"}},
	})
	checkConsistent(t, objs, "kube-system", "gossip", "pull-creds")
	if len(objs.Secrets) != 0 {
		t.Errorf("Secrets rendered although both exist: %+v", objs.Secrets)
	}
	for _, ds := range objs.DaemonSets {
		spec := ds.Spec.Template.Spec
		if s := volume(spec, "cluster-key").Secret; s == nil || s.SecretName != "gossip" {
			t.Errorf("%s cluster key from %+v", ds.Name, s)
		}
		// Not egressOnly: every node may fetch upstream, so every node has the credentials.
		if s := volume(spec, "registry-auth").Secret; s == nil || s.SecretName != "pull-creds" {
			t.Errorf("%s registry auth from %+v", ds.Name, s)
		}
	}
}

func TestChartWithoutEgressOrConfigure(t *testing.T) {
	objs := render(t, map[string]any{
		"egress":         map[string]any{"enabled": false},
		"containerd":     map[string]any{"configureHosts": false},
		"serviceAccount": map[string]any{"create": false},
	})
	checkConsistent(t, objs, "kube-system")
	if len(objs.DaemonSets) != 1 {
		t.Fatalf("%d DaemonSets, want 1", len(objs.DaemonSets))
	}
	spec := objs.DaemonSets[0].Spec.Template.Spec
	if got := nodeAffinity(objs.DaemonSets[0]); got != "" {
		t.Errorf("affinity %q without egress nodes: labelled nodes would get no daemon", got)
	}
	if len(spec.InitContainers) != 0 {
		t.Errorf("init containers %+v with configureHosts false", spec.InitContainers)
	}
	if spec.ServiceAccountName != "default" || len(objs.ServiceAccounts) != 0 {
		t.Errorf("service account %q, %d rendered", spec.ServiceAccountName, len(objs.ServiceAccounts))
	}
}

// A misspelled or ill-typed value fails the install instead of being ignored.
func TestChartRejectsBadValues(t *testing.T) {
	cases := []struct {
		name   string
		values map[string]any
		want   string
	}{
		{"unknown top-level key", map[string]any{"contaienrd": map[string]any{}}, "contaienrd"},
		{"unknown nested key", map[string]any{"containerd": map[string]any{"sockett": "/x.sock"}}, "sockett"},
		{"port out of range", map[string]any{"ports": map[string]any{"http": 70000}}, "http"},
		{"port as text", map[string]any{"ports": map[string]any{"gossip": "7946"}}, "gossip"},
		{"relative socket", map[string]any{"containerd": map[string]any{"socket": "run/containerd.sock"}}, "socket"},
		{"bad log level", map[string]any{"daemon": map[string]any{"logLevel": "loud"}}, "logLevel"},
		{"bad duration", map[string]any{"daemon": map[string]any{"lookupTimeout": "5 seconds"}}, "lookupTimeout"},
		{"join without port", map[string]any{"cluster": map[string]any{"join": []any{"seed.example"}}}, "join"},
		{"registry list as string", map[string]any{"containerd": map[string]any{"registries": "docker.io"}}, "registries"},
		{"negative limit", map[string]any{"daemon": map[string]any{"uploadLimit": -1}}, "uploadLimit"},
		{"no connections", map[string]any{"daemon": map[string]any{"maxConns": 0}}, "maxConns"},
		{"credentials only on absent egress nodes", map[string]any{"upstream": map[string]any{"auth": map[string]any{"egressOnly": true}}, "egress": map[string]any{"enabled": false}}, "egressOnly"},
		{"credentials not JSON", map[string]any{"upstream": map[string]any{"auth": map[string]any{"dockerconfigjson": "user:pass"}}}, "not JSON"},
		{"cluster key not base64", map[string]any{"cluster": map[string]any{"key": map[string]any{"value": "# comment\nnot-a-key!"}}}, "line 2"},
		{"cluster key of 20 bytes", map[string]any{"cluster": map[string]any{"key": map[string]any{"value": "AAECAwQFBgcICQoLDA0ODxAREhM="}}}, "line 1"},
		{"cluster key only comments", map[string]any{"cluster": map[string]any{"key": map[string]any{"value": "# none yet\n"}}}, "no key line"},
		{"bad pull policy", map[string]any{"image": map[string]any{"pullPolicy": "Sometimes"}}, "pullPolicy"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Render(context.Background(), RenderConfig{Values: c.values})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want an error naming %q", err, c.want)
			}
		})
	}
}

// The strict decoder is what catches a typo in a template: prove it does.
func TestDecodeStrictRejectsUnknownFields(t *testing.T) {
	text, err := Render(context.Background(), RenderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, from, to, want string }{
		{"misspelled field", "hostNetwork: true", "hostNetwrok: true", "hostNetwrok"},
		{"field at the wrong level", "      dnsPolicy: ClusterFirstWithHostNet", "      dnsPolicy: ClusterFirstWithHostNet\n      readOnly: true", "readOnly"},
		{"wrong type", "containerPort: 5000", "containerPort: five-thousand", "containerPort"},
		{"unknown kind", "kind: Service\n", "kind: Servic\n", "Servic"},
		{"duplicate key", "publishNotReadyAddresses: true", "publishNotReadyAddresses: true\n  publishNotReadyAddresses: false", "publishNotReadyAddresses"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(text, c.from) {
				t.Fatalf("rendered chart lacks %q", c.from)
			}
			_, err := DecodeStrict(strings.Replace(text, c.from, c.to, 1))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to name %q", err, c.want)
			}
		})
	}
}
