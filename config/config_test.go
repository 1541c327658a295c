package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultsValid(t *testing.T) {
	t.Setenv("NODE_NAME", "gpu-7")
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeName != "gpu-7" || c.HostRoot != "/" || c.Metrics.ListenAddress != DefaultListenAddress || !c.GPU.NVML.Enabled {
		t.Fatalf("unexpected defaults: %+v", c)
	}
}

func TestParseOverDefaults(t *testing.T) {
	c, err := Parse([]byte("hostRoot: /host\ndiscovery:\n  interval: 5m\nlog:\n  level: debug\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.HostRoot != "/host" || c.Discovery.Interval != 5*time.Minute || c.Discovery.SourceTimeout != 10*time.Second || c.Log.Level != "debug" {
		t.Fatalf("got %+v", c)
	}
	if c, err := Parse([]byte("gpu:\n  nvml:\n    driverRoot: /run/nvidia/driver\n")); err != nil || c.GPU.NVML.DriverRoot != "/run/nvidia/driver" {
		t.Fatalf("driverRoot: %+v %v", c.GPU.NVML, err)
	}
	if c, err := Parse(nil); err != nil || c.HostRoot != "/" {
		t.Fatalf("empty file: %+v %v", c, err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"hostroot: /host", `line 1: unknown key "hostroot"`},
		{"discovery:\n  intervall: 5m", `line 2: unknown key "intervall" in discovery`},
		{"gpu:\n  nvml:\n    enable: true", `unknown key "enable" in gpu.nvml`},
		{"gpu:\n  amd:\n    library: /x", `unknown key "library" in gpu.amd`},
		{"discovery:\n  interval: soon", "line 2: cannot unmarshal"},
		{"discovery:\n  interval: 10ms", "discovery.interval: must be at least 1s"},
		{"discovery:\n  interval: 5s\n  sourceTimeout: 6s", "must not exceed discovery.interval"},
		{"hostRoot: relative/path", "hostRoot: must be an absolute path"},
		{"gpu:\n  nvml:\n    driverRoot: run/nvidia/driver", `gpu.nvml.driverRoot: must be an absolute host path or empty, got "run/nvidia/driver"`},
		{"labels:\n  domain: Bad_Domain", "labels.domain"},
		{"metrics:\n  listenAddress: 9835", "metrics.listenAddress"},
		{"metrics:\n  listenAddress: ':99999'", `metrics.listenAddress: port 99999 of ":99999" is out of range`},
		{"metrics:\n  listenAddress: ':-1'", "metrics.listenAddress: port -1"},
		{"metrics:\n  listenAddress: ':no-such-service'", "neither a number from 0 to 65535 nor a known service"},
		{"log:\n  level: loud", `unknown level "loud"`},
		{"log:\n  format: xml", "log.format"},
		{"a: [", "line 1"},
		{"log: {level: info}\n---\nlog: {level: debug}", "more than one YAML document"},
		{"log: \xc3\x28", "invalid"},
		{"labels:\n  sets:\n    gfd: true", `unknown key "gfd" in labels.sets`},
		{"labels:\n  sets:\n    nvidia: yes please", "cannot unmarshal"},
		{"publish:\n  resync: 0s", "publish.resync"},
		{"publish:\n  requestTimeout: 1ms", "publish.requestTimeout"},
		{"publish:\n  backoffInitial: 5m\n  backoffMax: 1m", "publish.backoffInitial"},
		{"publish:\n  eventNamespace: Not_A_Namespace", "publish.eventNamespace"},
		{"publish:\n  nfdFeatureFile: features.d/gpunode", "publish.nfdFeatureFile"},
		{"publish:\n  kubeconfg: /x", `unknown key "kubeconfg" in publish`},
		{"discovery:\n  interval: 1h\npublish:\n  nfdFeatureFile: /run/nfd/gpunode\n  nfdFeatureTTL: 90m", "publish.nfdFeatureTTL"},
		{"metrics:\n  sampleInterval: 10ms", "metrics.sampleInterval: must be between 1s and 10m"},
		{"metrics:\n  sampleInterval: 100ms", "metrics.sampleInterval: must be between 1s and 10m"}, // NVML's GPM floor
		{"metrics:\n  sampleInterval: 1h", "metrics.sampleInterval"},
		{"metrics:\n  dcgmCompat: maybe", "cannot unmarshal"},
		{"metrics:\n  podResourcesSocket: kubelet.sock", "metrics.podResourcesSocket: must be an absolute path"},
		{"metrics:\n  podLabels:\n    keys: ['app.kubernetes.io/name', 'bad key']", `metrics.podLabels.keys: must be pod label keys such as app.kubernetes.io/name, got "bad key"`},
		{"metrics:\n  podLabels:\n    keys: [a, b, a]", `metrics.podLabels.keys: lists "a" twice`},
		{"metrics:\n  podResourcesSocket: ''\n  podLabels:\n    keys: [app]", "metrics.podLabels.keys: need metrics.podResourcesSocket"},
		{"metrics:\n  podLabels:\n    maxValuesPerLabel: 0", "metrics.podLabels.maxValuesPerLabel"},
		{"metrics:\n  podLabels:\n    refreshInterval: 1s", "metrics.podLabels.refreshInterval: must be between 10s and 1h"},
		{"metrics:\n  podLabels:\n    key: [app]", `unknown key "key" in metrics.podLabels`},
		{"metrics:\n  health:\n    criticalXIDs: [79, 0]", "XID 0 is not"},
		{"metrics:\n  health:\n    criticalXIDs: [-1]", "cannot unmarshal"},
		{"metrics:\n  health:\n    criticalXIDs: 79", "cannot unmarshal"},
		{"metrics:\n  health:\n    taint:\n      effect: Evict", "metrics.health.taint.effect"},
		{"metrics:\n  health:\n    taint:\n      key: 'bad key!'", "metrics.health.taint.key"},
		{"metrics:\n  health:\n    taint:\n      enable: true", `unknown key "enable" in metrics.health.taint`},
		{"metrics:\n  health:\n    xids: [1]", `unknown key "xids" in metrics.health`},
		{"metrics:\n  health:\n    throttleAfter: 5s", "metrics.health.throttleAfter: must be between metrics.sampleInterval (10s) and 24h"},
		{"metrics:\n  health:\n    throttleAfter: 48h", "metrics.health.throttleAfter"},
	} {
		_, err := Parse([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) error = %v, want it to contain %q", tc.in, err, tc.want)
		}
	}
}

func TestLabelSetsAndPublish(t *testing.T) {
	c := Default()
	if !c.Labels.Sets.GPUNode || !c.Labels.Sets.LLMD || c.Labels.Sets.NVIDIA || c.Labels.Sets.AMD {
		t.Errorf("default label sets: %+v", c.Labels.Sets)
	}
	if c.Publish.AllowSimulated || c.Publish.NFDFeatureFile != "" || c.Publish.EventNamespace != "default" {
		t.Errorf("default publish: %+v", c.Publish)
	}
	c, err := Parse([]byte("labels:\n  sets:\n    llm-d: false\n    nvidia: true\npublish:\n  allowSimulated: true\n  resync: 30s\n  nfdFeatureFile: /etc/kubernetes/node-feature-discovery/features.d/gpunode\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Labels.Sets.GPUNode || c.Labels.Sets.LLMD || !c.Labels.Sets.NVIDIA || !c.Publish.AllowSimulated || c.Publish.Resync != 30*time.Second {
		t.Errorf("parsed: %+v %+v", c.Labels.Sets, c.Publish)
	}
}

// The NFD TTL only matters when there is an NFD file: a long discovery
// interval without one is valid (issue 14, item 6).
func TestNFDTTLOnlyWithFile(t *testing.T) {
	if _, err := Parse([]byte("discovery:\n  interval: 45m\n")); err != nil {
		t.Errorf("45m interval without an NFD file: %v", err)
	}
	if _, err := Parse([]byte("discovery:\n  interval: 45m\npublish:\n  nfdFeatureFile: /run/nfd/gpunode\n")); err == nil || !strings.Contains(err.Error(), "publish.nfdFeatureTTL") {
		t.Errorf("45m interval with an NFD file and the 1h TTL: %v", err)
	}
}

func TestMetricsSection(t *testing.T) {
	c, err := Parse([]byte(`metrics:
  sampleInterval: 2s
  dcgmCompat: true
  podResourcesSocket: ""
  health:
    criticalXIDs: [79, 48]
    throttleAfter: 90s
    taint:
      enabled: true
      effect: NoExecute
`))
	if err != nil {
		t.Fatal(err)
	}
	m := c.Metrics
	if m.SampleInterval != 2*time.Second || !m.DCGMCompat || m.PodResourcesSocket != "" || len(m.Health.CriticalXIDs) != 2 ||
		m.Health.CriticalXIDs[0] != 79 || !m.Health.Taint.Enabled || m.Health.Taint.Effect != "NoExecute" ||
		m.Health.Taint.Key != "gpunode.dev/gpu-unhealthy" || m.ListenAddress != DefaultListenAddress || m.Health.ThrottleAfter != 90*time.Second {
		t.Errorf("metrics %+v", m)
	}
	d := Default().Metrics
	if d.SampleInterval != 10*time.Second || d.DCGMCompat || d.PodResourcesSocket != "/var/lib/kubelet/pod-resources/kubelet.sock" ||
		len(d.Health.CriticalXIDs) == 0 || d.Health.Taint.Enabled || d.Health.ThrottleAfter != 5*time.Minute {
		t.Errorf("defaults %+v", d)
	}
	if len(d.PodLabels.Keys) != 0 || d.PodLabels.MaxValuesPerLabel != 64 || d.PodLabels.RefreshInterval != time.Minute {
		t.Errorf("pod labels are opt-in: defaults %+v", d.PodLabels)
	}
	c, err = Parse([]byte("metrics:\n  podLabels:\n    keys: [app.kubernetes.io/name, llm-d.ai/role]\n    maxValuesPerLabel: 8\n    refreshInterval: 30s\n"))
	if pl := c.Metrics.PodLabels; err != nil || len(pl.Keys) != 2 || pl.Keys[1] != "llm-d.ai/role" || pl.MaxValuesPerLabel != 8 || pl.RefreshInterval != 30*time.Second {
		t.Errorf("pod labels %+v %v", pl, err)
	}
	// An empty list is "no XID is critical", not the default.
	c, err = Parse([]byte("metrics:\n  health:\n    criticalXIDs: []\n"))
	if err != nil || c.Metrics.Health.CriticalXIDs == nil || len(c.Metrics.Health.CriticalXIDs) != 0 {
		t.Errorf("empty list: %#v %v", c.Metrics.Health.CriticalXIDs, err)
	}
	// Changing any of it needs a restart.
	b := Default()
	b.Metrics.Health.CriticalXIDs = []uint64{79}
	if keys := RestartNeeded(Default(), b); len(keys) != 1 || keys[0] != "metrics" {
		t.Errorf("RestartNeeded = %v", keys)
	}
}

func TestValidateReportsAll(t *testing.T) {
	_, err := Parse([]byte("hostRoot: x\nlog:\n  level: loud\n  format: xml"))
	if err == nil || strings.Count(err.Error(), "\n") != 2 {
		t.Fatalf("want three errors, got %v", err)
	}
}

func TestLoadFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, []byte("nodeName: n1\n"), 0o600)
	if c, err := Load(p); err != nil || c.NodeName != "n1" {
		t.Fatalf("Load = %+v, %v", c, err)
	}
	if _, err := Load(p + ".missing"); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestAMDSection(t *testing.T) {
	if d := Default().GPU.AMD; !d.Enabled || d.LibraryPath != "" {
		t.Fatalf("default gpu.amd: %+v", d)
	}
	c, err := Parse([]byte("gpu:\n  amd:\n    enabled: false\n    libraryPath: /opt/rocm/lib/libamd_smi.so\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.GPU.AMD != (AMD{Enabled: false, LibraryPath: "/opt/rocm/lib/libamd_smi.so"}) || !c.GPU.NVML.Enabled {
		t.Fatalf("got %+v", c.GPU)
	}
	if keys := RestartNeeded(Default(), c); strings.Join(keys, ",") != "gpu" {
		t.Errorf("a backend change needs a restart; got %v", keys)
	}
}

func TestRestartNeeded(t *testing.T) {
	a := Default()
	b := a
	b.Log.Level = "debug"
	b.Discovery.Interval = time.Hour
	b.Labels.Sets.NVIDIA = true
	b.Metrics.Health.Taint = Taint{Enabled: true, Key: "example.com/gpu", Effect: "NoExecute"}
	if keys := RestartNeeded(a, b); len(keys) != 0 {
		t.Errorf("reloadable changes flagged: %v", keys)
	}
	b.HostRoot = "/host"
	b.Metrics.ListenAddress = ":1"
	b.Publish.Resync = time.Hour
	if keys := RestartNeeded(a, b); strings.Join(keys, ",") != "hostRoot,publish,metrics" {
		t.Errorf("got %v", keys)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "hostRoot: /host", "discovery: {interval: 1m}", "a: [", "log:\n  level: x", "gpu: {nvml: {enabled: false}}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err == nil {
			if verr := c.Validate(); verr != nil {
				t.Fatalf("Parse accepted an invalid config: %v", verr)
			}
		}
	})
}
