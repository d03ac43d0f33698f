package deploy

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Objects are the rendered manifests, decoded into the Kubernetes API types.
type Objects struct {
	DaemonSets      []appsv1.DaemonSet
	Services        []corev1.Service
	Secrets         []corev1.Secret
	ServiceAccounts []corev1.ServiceAccount
	ServiceMonitors []ServiceMonitor
}

// ServiceMonitor is the part of prometheus-operator's monitoring.coreos.com/v1
// ServiceMonitor the chart uses, with the operator's field names; strict
// decoding into it fails on any field the chart writes that is not here.
type ServiceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ServiceMonitorSpec `json:"spec"`
}

// ServiceMonitorSpec is monitoring.coreos.com/v1 ServiceMonitorSpec, in part.
type ServiceMonitorSpec struct {
	Selector          metav1.LabelSelector `json:"selector"`
	NamespaceSelector struct {
		MatchNames []string `json:"matchNames,omitempty"`
	} `json:"namespaceSelector"`
	Endpoints []ServiceMonitorEndpoint `json:"endpoints"`
}

// ServiceMonitorEndpoint is monitoring.coreos.com/v1 Endpoint, in part.
type ServiceMonitorEndpoint struct {
	Port          string `json:"port"`
	Path          string `json:"path,omitempty"`
	Interval      string `json:"interval,omitempty"`
	ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
	Relabelings   []struct {
		SourceLabels []string `json:"sourceLabels,omitempty"`
		TargetLabel  string   `json:"targetLabel,omitempty"`
	} `json:"relabelings,omitempty"`
}

// DecodeStrict decodes every document of a YAML stream into its API type.
// An unknown kind, an unknown or misspelled field, or a value of the wrong
// type is an error naming the document.
func DecodeStrict(stream string) (Objects, error) {
	var objs Objects
	for i, doc := range Documents(stream) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			return objs, fmt.Errorf("document %d: %w", i+1, err)
		}
		var err error
		switch gvk := tm.APIVersion + " " + tm.Kind; gvk {
		case "apps/v1 DaemonSet":
			objs.DaemonSets, err = decodeInto(doc, objs.DaemonSets)
		case "v1 Service":
			objs.Services, err = decodeInto(doc, objs.Services)
		case "v1 Secret":
			objs.Secrets, err = decodeInto(doc, objs.Secrets)
		case "v1 ServiceAccount":
			objs.ServiceAccounts, err = decodeInto(doc, objs.ServiceAccounts)
		case "monitoring.coreos.com/v1 ServiceMonitor":
			objs.ServiceMonitors, err = decodeInto(doc, objs.ServiceMonitors)
		default:
			err = fmt.Errorf("no API type known for %q", gvk)
		}
		if err != nil {
			return objs, fmt.Errorf("document %d (%s %s): %w", i+1, tm.APIVersion, tm.Kind, err)
		}
	}
	return objs, nil
}

func decodeInto[T any](doc string, list []T) ([]T, error) {
	var obj T
	if err := yaml.UnmarshalStrict([]byte(doc), &obj); err != nil {
		return list, err
	}
	return append(list, obj), nil
}
