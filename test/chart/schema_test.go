package chart

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// values.schema.json refuses typos and wrong types before anything is
// rendered, naming the key.
func TestSchemaRejectsBadValues(t *testing.T) {
	for _, tc := range []struct{ values, want string }{
		{"imagee: {}\n", "additional properties 'imagee' not allowed"},
		{"image: {tag: 1}\n", "/image/tag"},
		{"image: {pullPolicy: Sometimes}\n", "/image/pullPolicy"},
		{"metrics: {port: \"9835\"}\n", "/metrics/port"},
		{"metrics: {port: 70000}\n", "/metrics/port"},
		{"metrics: {scheme: ftp}\n", "/metrics/scheme"},
		{"config: {discovery: {intervall: 5m}}\n", "additional properties 'intervall' not allowed"},
		{"config: {discovery: {interval: 5}}\n", "/config/discovery/interval"},
		{"config: {discovery: {interval: five minutes}}\n", "/config/discovery/interval"},
		{"config: {tuning: {mode: of}}\n", "/config/tuning/mode"},
		{"config: {tuning: {stateDir: var/lib/gpunode}}\n", "/config/tuning/stateDir"},
		{"config: {log: {level: verbose}}\n", "/config/log/level"},
		{"config: {labels: {sets: {nvidia: \"yes\"}}}\n", "/config/labels/sets/nvidia"},
		{"config: {labels: {sets: {nvdia: true}}}\n", "additional properties 'nvdia' not allowed"},
		{"config: {metrics: {dcgmCompat: 1}}\n", "/config/metrics/dcgmCompat"},
		{"config: {metrics: {health: {taint: {effect: NoScheduleX}}}}\n", "/config/metrics/health/taint/effect"},
		{"config: {metrics: {health: {criticalXIDs: [\"79\"]}}}\n", "/config/metrics/health/criticalXIDs/0"},
		{"config: {probe: {enabled: \"true\"}}\n", "/config/probe/enabled"},
		{"config: {probe: {thresholds: {minLineRateFraction: 1.5}}}\n", "/config/probe/thresholds/minLineRateFraction"},
		{"config: {probe: {randomPeers: -1}}\n", "/config/probe/randomPeers"},
		{"config: {probe: {intervall: 1m}}\n", "additional properties 'intervall' not allowed"},
		{"config: {probe: {listenAddress: \"9836\"}}\n", "/config/probe/listenAddress"},
		{"nodeSelector: {kubernetes.io/os: 1}\n", "/nodeSelector/kubernetes.io~1os"},
		{"tolerations: {key: x}\n", "/tolerations"},
		{"updateStrategy: {type: Recreate}\n", "/updateStrategy/type"},
		// Two agents on one node would clash on host ports and the tuning journal.
		{"updateStrategy: {rollingUpdate: {maxSurge: 1}}\n", "/updateStrategy/rollingUpdate/maxSurge"},
		{"updateStrategy: {rollingUpdate: {maxSurge: \"10%\"}}\n", "/updateStrategy/rollingUpdate/maxSurge"},
		{"priorityQuota: {pods: 0}\n", "/priorityQuota/pods"},
		{"serviceMonitor: {enabled: yes please}\n", "/serviceMonitor/enabled"},
		{"serviceMonitor: {interval: 30}\n", "/serviceMonitor/interval"},
		{"podMonitor: {scrapeTimeout: 10 s}\n", "/podMonitor/scrapeTimeout"},
		{"prometheusRule: {thresholds: {rdmaLatencySeconds: 10us}}\n", "/prometheusRule/thresholds/rdmaLatencySeconds"},
		{"prometheusRule: {thresholds: {rdmaBandwidthBytesPerSecond: 0}}\n", "/prometheusRule/thresholds/rdmaBandwidthBytesPerSecond"},
		{"prometheusRule: {for: {rdma: 10 minutes}}\n", "/prometheusRule/for/rdma"},
		{"prometheusRule: {treshold: {}}\n", "additional properties 'treshold' not allowed"},
		{"dashboards: {label: \"not a label!\"}\n", "/dashboards/label"},
		{"probeToken: {existingSecretKey: \"\"}\n", "/probeToken/existingSecretKey"},
		{"hostRoot: host\n", "/hostRoot"},
	} {
		f := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(f, []byte(tc.values), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := helm(t, "template", "gpunode", chartDir, "--kube-version", kubeVersion, "-f", f)
		if err == nil || !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("values %q: got %v, want a schema error naming %s", tc.values, err, tc.want)
		}
	}
}

// schemaKeys lists every key path the schema defines ("config.probe.interval").
func schemaKeys(prefix string, s map[string]any, out *[]string) {
	props, _ := s["properties"].(map[string]any)
	for k, v := range props {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		*out = append(*out, p)
		schemaKeys(p, v.(map[string]any), out)
	}
}

// Every value the schema knows is documented in the chart's README (as
// `key.path` in a table), and the schema knows every default value (helm
// lint checks values.yaml against it, and it is closed).
func TestEveryValueIsDocumented(t *testing.T) {
	var schema map[string]any
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(chartDir, "values.schema.json"))), &schema); err != nil {
		t.Fatal(err)
	}
	if schema["additionalProperties"] != false {
		t.Fatal("the schema's top level is open")
	}
	var keys []string
	schemaKeys("", schema, &keys)
	sort.Strings(keys)
	readme := readFile(t, filepath.Join(chartDir, "README.md"))
	var missing []string
	for _, k := range keys {
		if !strings.Contains(readme, "| `"+k+"` |") {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d values not documented in %s/README.md as \"| `key` |\" rows: %s", len(missing), chartDir, strings.Join(missing, ", "))
	}
	if len(keys) < 100 {
		t.Errorf("only %d keys in the schema", len(keys))
	}
}
