// Package config is the agent's configuration file: YAML, decoded strictly
// (an unknown key is an error that names it), with defaults and validation.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gpunode/gpunode/labels"

	"go.yaml.in/yaml/v3"

	"github.com/gpunode/gpunode/health"
)

// DefaultListenAddress is clear of dcgm-exporter (9400), node_exporter (9100)
// and AMD's device metrics exporter (5000), which often run beside us.
const DefaultListenAddress = ":9835"

// Config is the whole agent configuration. Field names are the YAML keys.
type Config struct {
	// HostRoot is where the host's "/" is mounted: "/" on a host, "/host" in a pod.
	HostRoot string `yaml:"hostRoot"`
	// NodeName is the Kubernetes Node the agent runs on; empty means
	// standalone (nothing is published). Defaults to $NODE_NAME.
	NodeName  string    `yaml:"nodeName"`
	Discovery Discovery `yaml:"discovery"`
	GPU       GPU       `yaml:"gpu"`
	Labels    Labels    `yaml:"labels"`
	Publish   Publish   `yaml:"publish"`
	Metrics   Metrics   `yaml:"metrics"`
	Log       Log       `yaml:"log"`
	Tuning    Tuning    `yaml:"tuning"`
	Verify    Verify    `yaml:"verify"`
	Probe     Probe     `yaml:"probe"`
}

// Discovery controls the discovery loop.
type Discovery struct {
	// Interval between discoveries; hardware rarely changes, so minutes are fine.
	Interval time.Duration `yaml:"interval"`
	// SourceTimeout bounds each source (topology, rdma, nvml) per run.
	SourceTimeout time.Duration `yaml:"sourceTimeout"`
}

// GPU selects GPU backends.
type GPU struct {
	NVML NVML `yaml:"nvml"`
	AMD  AMD  `yaml:"amd"`
}

// AMD configures the AMD backends: AMD SMI (libamd_smi.so) when it loads,
// else the amdgpu driver's sysfs.
type AMD struct {
	Enabled bool `yaml:"enabled"`
	// LibraryPath overrides where libamd_smi.so is loaded from.
	LibraryPath string `yaml:"libraryPath"`
}

// NVML configures the NVIDIA backend.
type NVML struct {
	Enabled bool `yaml:"enabled"`
	// LibraryPath overrides where libnvidia-ml.so.1 is loaded from (a
	// path in the agent's filesystem, or a name for the loader to search).
	LibraryPath string `yaml:"libraryPath"`
	// DriverRoot is the host path of the NVIDIA driver's root filesystem
	// ("/run/nvidia/driver", "/home/kubernetes/bin/nvidia"), searched under
	// hostRoot first when libraryPath is empty.
	DriverRoot string `yaml:"driverRoot"`
}

// Labels configures the node labels the agent computes.
type Labels struct {
	// Domain is the prefix of the agent's own labels ("gpunode.dev").
	Domain string    `yaml:"domain"`
	Sets   LabelSets `yaml:"sets"`
}

// Options are the label options this configuration selects.
func (l Labels) Options() labels.Options {
	return labels.Options{Domain: l.Domain, Sets: map[labels.SetName]bool{
		labels.GPUNode: l.Sets.GPUNode, labels.LLMD: l.Sets.LLMD, labels.NVIDIA: l.Sets.NVIDIA, labels.AMD: l.Sets.AMD,
	}}
}

// LabelSets switches the label sets on and off.
type LabelSets struct {
	GPUNode bool `yaml:"gpunode"` // the agent's own labels under the domain
	LLMD    bool `yaml:"llm-d"`   // keys llm-d manifests select on
	NVIDIA  bool `yaml:"nvidia"`  // GPU Feature Discovery compatible
	AMD     bool `yaml:"amd"`     // AMD GPU node labeller compatible
}

// Publish configures how labels and conditions reach the Node (when
// nodeName is set) and the optional NFD feature file.
type Publish struct {
	// Kubeconfig is a kubeconfig file; empty means $KUBECONFIG, else
	// ~/.kube/config, else the in-cluster service account (as kubectl).
	Kubeconfig string `yaml:"kubeconfig"`
	// Resync is how often the agent re-reads its Node (one GET) to repair
	// labels someone removed; writes happen only on a difference.
	Resync time.Duration `yaml:"resync"`
	// RequestTimeout bounds each API request.
	RequestTimeout time.Duration `yaml:"requestTimeout"`
	// BackoffInitial and BackoffMax bound the retry delay (exponential,
	// with jitter) while the API server is unreachable or erroring.
	BackoffInitial time.Duration `yaml:"backoffInitial"`
	BackoffMax     time.Duration `yaml:"backoffMax"`
	// EventNamespace is where Node events are recorded (kubelet uses "default").
	EventNamespace string `yaml:"eventNamespace"`
	// Instance names the deployment that manages this Node (the chart sets
	// <namespace>/<release>); written as the Node's gpunode.dev/instance
	// annotation, so `cleanup --all-nodes` of one deployment cleans only
	// its own Nodes. Empty: no annotation.
	Instance string `yaml:"instance"`
	// AllowSimulated publishes a simulated node's labels to the real Node;
	// off, a simulated node only logs them.
	AllowSimulated bool `yaml:"allowSimulated"`
	// NFDFeatureFile, if set, also writes the labels to this file for Node
	// Feature Discovery's local source (features.d), atomically.
	NFDFeatureFile string `yaml:"nfdFeatureFile"`
	// NFDFeatureTTL makes NFD drop the file's labels this long after the
	// agent last refreshed it (it does so at half-life), so they do not
	// outlive an uninstalled agent; 0 means no expiry.
	NFDFeatureTTL time.Duration `yaml:"nfdFeatureTTL"`
}

// MinSampleInterval is the shortest metrics.sampleInterval. NVML's GPM
// samples must be more than 100 ms apart (nvml.h, nvmlGpmSampleGet) and a
// round can start early when the one before it ran late, so the floor
// sits well above NVML's.
const MinSampleInterval = time.Second

// Metrics configures the HTTP endpoint and the telemetry behind it.
type Metrics struct {
	ListenAddress string `yaml:"listenAddress"`
	// WebConfigFile is an exporter-toolkit web config (TLS, basic auth).
	WebConfigFile string `yaml:"webConfigFile"`
	// HealthListenAddress, when set, also serves /healthz and /readyz
	// there, in plain HTTP without authentication: for the kubelet's
	// probes when the web config requires basic auth or client
	// certificates. They say only whether the agent is live and ready.
	HealthListenAddress string `yaml:"healthListenAddress"`
	// SampleInterval is how often GPUs and RDMA counters are read, at
	// least MinSampleInterval; scrapes
	// serve the latest reading.
	SampleInterval time.Duration `yaml:"sampleInterval"`
	// DCGMCompat also exports dcgm-exporter's metric names and labels.
	DCGMCompat bool `yaml:"dcgmCompat"`
	// PodResourcesSocket is the kubelet's pod-resources socket, as the
	// agent sees it, for pod labels on GPU metrics; empty disables them.
	PodResourcesSocket string    `yaml:"podResourcesSocket"`
	PodLabels          PodLabels `yaml:"podLabels"`
	Health             Health    `yaml:"health"`
	// RDMAHealth judges the RDMA ports (RDMAHealthy).
	RDMAHealth RDMAHealth `yaml:"rdmaHealth"`
}

// PodLabels copies pod labels onto the allocation and per-pod GPU series
// (opt-in: no keys, no labels). They are read from the API server, listing
// the pods of this node, which needs list on pods in every namespace.
type PodLabels struct {
	// Keys are the pod label keys to copy ("app.kubernetes.io/name"); each
	// becomes label_<sanitised key>, as kube-state-metrics names them.
	Keys []string `yaml:"keys"`
	// MaxValuesPerLabel caps each label's distinct values on the node;
	// pods beyond it get the label empty and are counted.
	MaxValuesPerLabel int `yaml:"maxValuesPerLabel"`
	// RefreshInterval is how often the node's pods are listed.
	RefreshInterval time.Duration `yaml:"refreshInterval"`
}

// Health configures how GPU health is judged and acted on.
type Health struct {
	// CriticalXIDs make a GPU unhealthy when the driver reports them.
	CriticalXIDs []uint64 `yaml:"criticalXIDs"`
	Taint        Taint    `yaml:"taint"`
	// ThrottleAfter is how long a hardware, power-brake or thermal
	// slowdown must hold before the GPU is Degraded (it stays healthy).
	ThrottleAfter time.Duration `yaml:"throttleAfter"`
}

// Taint is the opt-in taint put on the Node while GPUHealthy is False.
type Taint struct {
	Enabled bool   `yaml:"enabled"`
	Key     string `yaml:"key"`
	// Effect is NoSchedule, PreferNoSchedule or NoExecute.
	Effect string `yaml:"effect"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text, json
}

// Default returns the configuration used when no file is given.
func Default() Config {
	return Config{
		HostRoot: "/",
		NodeName: os.Getenv("NODE_NAME"),
		Discovery: Discovery{
			Interval:      time.Minute,
			SourceTimeout: 10 * time.Second,
		},
		GPU:    GPU{NVML: NVML{Enabled: true}, AMD: AMD{Enabled: true}},
		Labels: Labels{Domain: "gpunode.dev", Sets: LabelSets{GPUNode: true, LLMD: true}},
		Publish: Publish{
			Resync:         5 * time.Minute,
			RequestTimeout: 10 * time.Second,
			BackoffInitial: time.Second,
			BackoffMax:     2 * time.Minute,
			EventNamespace: "default",
			NFDFeatureTTL:  time.Hour,
		},
		Metrics: Metrics{
			ListenAddress:      DefaultListenAddress,
			SampleInterval:     10 * time.Second,
			PodResourcesSocket: "/var/lib/kubelet/pod-resources/kubelet.sock",
			PodLabels:          PodLabels{MaxValuesPerLabel: 64, RefreshInterval: time.Minute},
			Health: Health{
				CriticalXIDs:  slices.Clone(health.DefaultCriticalXIDs),
				Taint:         Taint{Key: "gpunode.dev/gpu-unhealthy", Effect: "NoSchedule"},
				ThrottleAfter: health.DefaultThrottleAfter,
			},
			RDMAHealth: defaultRDMAHealth(),
		},
		Log:    Log{Level: "info", Format: "text"},
		Tuning: DefaultTuning(),
		Probe:  DefaultProbe(),
	}
}

// Load reads and validates a config file over the defaults. An empty path
// returns the validated defaults.
func Load(path string) (Config, error) {
	if path == "" {
		c := Default()
		return c, c.Validate()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes YAML over the defaults, strictly, and validates the result.
func Parse(b []byte) (Config, error) {
	c := Default()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, cleanYAMLError(err)
	}
	// A second document is almost certainly a mistake (a stray "---").
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return Config{}, errors.New("more than one YAML document")
	}
	return c, c.Validate()
}

var unknownField = regexp.MustCompile(`field (\S+) not found in type (?:config|tuning)\.(\w+)`)

// cleanYAMLError rewrites yaml's Go-type-centric messages into ones that
// name the key: "line 3: unknown key \"intervall\" in discovery".
func cleanYAMLError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.ReplaceAll(msg, "unmarshal errors:\n  ", "")
	msg = unknownField.ReplaceAllStringFunc(msg, func(m string) string {
		sub := unknownField.FindStringSubmatch(m)
		section := sectionNames[sub[2]]
		if section == "" {
			section = probeSectionNames[sub[2]]
		}
		if section == "" {
			return fmt.Sprintf("unknown key %q", sub[1])
		}
		return fmt.Sprintf("unknown key %q in %s", sub[1], section)
	})
	return errors.New(strings.ReplaceAll(msg, "\n  ", "; "))
}

// sectionNames maps Go type names to the YAML path users write.
var sectionNames = map[string]string{
	"Config":     "",
	"Discovery":  "discovery",
	"GPU":        "gpu",
	"NVML":       "gpu.nvml",
	"AMD":        "gpu.amd",
	"Tuning":     "tuning",
	"Profile":    "tuning.customProfile",
	"NUMA":       "tuning.customProfile.numa",
	"IRQ":        "tuning.customProfile.irq",
	"IRQPolicy":  "tuning.customProfile.irq.policies",
	"RoCE":       "tuning.customProfile.roce",
	"Labels":     "labels",
	"LabelSets":  "labels.sets",
	"Publish":    "publish",
	"Metrics":    "metrics",
	"PodLabels":  "metrics.podLabels",
	"Health":     "metrics.health",
	"Taint":      "metrics.health.taint",
	"RDMAHealth": "metrics.rdmaHealth",
	"Log":        "log",
	"Verify":     "verify",
}

// labelDomain follows the DNS subdomain rule Kubernetes applies to label prefixes.
var labelDomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// labelName is a DNS label, the rule for namespace names.
var labelName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// taintKey is a Kubernetes qualified name with an optional DNS prefix.
var taintKey = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`)

// Validate reports every invalid setting at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.HostRoot == "" || !strings.HasPrefix(c.HostRoot, "/") {
		bad("hostRoot", "must be an absolute path, got %q", c.HostRoot)
	}
	if r := c.GPU.NVML.DriverRoot; r != "" && !strings.HasPrefix(r, "/") {
		bad("gpu.nvml.driverRoot", "must be an absolute host path or empty, got %q", r)
	}
	if c.Discovery.Interval < time.Second {
		bad("discovery.interval", "must be at least 1s, got %s", c.Discovery.Interval)
	}
	if c.Discovery.SourceTimeout < 100*time.Millisecond {
		bad("discovery.sourceTimeout", "must be at least 100ms, got %s", c.Discovery.SourceTimeout)
	}
	if c.Discovery.SourceTimeout > c.Discovery.Interval {
		bad("discovery.sourceTimeout", "(%s) must not exceed discovery.interval (%s)", c.Discovery.SourceTimeout, c.Discovery.Interval)
	}
	if len(c.Labels.Domain) > 253 || !labelDomain.MatchString(c.Labels.Domain) {
		bad("labels.domain", "must be a lower-case DNS subdomain such as gpunode.dev, got %q", c.Labels.Domain)
	}
	if c.Publish.Resync < time.Second {
		bad("publish.resync", "must be at least 1s, got %s", c.Publish.Resync)
	}
	if c.Publish.RequestTimeout < 100*time.Millisecond {
		bad("publish.requestTimeout", "must be at least 100ms, got %s", c.Publish.RequestTimeout)
	}
	if c.Publish.BackoffInitial < 10*time.Millisecond || c.Publish.BackoffMax < c.Publish.BackoffInitial {
		bad("publish.backoffInitial", "must be at least 10ms and at most publish.backoffMax, got %s and %s", c.Publish.BackoffInitial, c.Publish.BackoffMax)
	}
	if len(c.Publish.EventNamespace) > 63 || !labelName.MatchString(c.Publish.EventNamespace) {
		bad("publish.eventNamespace", "must be a namespace name, got %q", c.Publish.EventNamespace)
	}
	if f := c.Publish.NFDFeatureFile; f != "" && (!strings.HasPrefix(f, "/") || strings.HasSuffix(f, "/")) {
		bad("publish.nfdFeatureFile", "must be an absolute file path, got %q", f)
	}
	// The TTL is only written into the NFD file: without one it bounds nothing.
	if c.Publish.NFDFeatureFile != "" && c.Publish.NFDFeatureTTL != 0 && c.Publish.NFDFeatureTTL < 2*c.Discovery.Interval {
		bad("publish.nfdFeatureTTL", "(%s) must be 0 or at least twice discovery.interval (%s), or the file expires between refreshes", c.Publish.NFDFeatureTTL, c.Discovery.Interval)
	}
	if a := c.Metrics.HealthListenAddress; a != "" {
		if err := checkListenAddress(a); err != nil {
			bad("metrics.healthListenAddress", "%v", err)
		}
	}
	if err := checkListenAddress(c.Metrics.ListenAddress); err != nil {
		bad("metrics.listenAddress", "%v", err)
	}
	if si := c.Metrics.SampleInterval; si < MinSampleInterval || si > 10*time.Minute {
		bad("metrics.sampleInterval", "must be between %s and 10m, got %s", MinSampleInterval, si)
	}
	if p := c.Metrics.PodResourcesSocket; p != "" && !strings.HasPrefix(p, "/") {
		bad("metrics.podResourcesSocket", "must be an absolute path or empty, got %q", p)
	}
	pl := c.Metrics.PodLabels
	for i, k := range pl.Keys {
		if len(k) > 317 || !taintKey.MatchString(k) {
			bad("metrics.podLabels.keys", "must be pod label keys such as app.kubernetes.io/name, got %q", k)
		} else if slices.Contains(pl.Keys[:i], k) {
			bad("metrics.podLabels.keys", "lists %q twice", k)
		}
	}
	if len(pl.Keys) > 0 && c.Metrics.PodResourcesSocket == "" {
		bad("metrics.podLabels.keys", "need metrics.podResourcesSocket: the labels go on the series of pods holding GPUs")
	}
	if pl.MaxValuesPerLabel < 1 || pl.MaxValuesPerLabel > 10000 {
		bad("metrics.podLabels.maxValuesPerLabel", "must be between 1 and 10000, got %d", pl.MaxValuesPerLabel)
	}
	if pl.RefreshInterval < 10*time.Second || pl.RefreshInterval > time.Hour {
		bad("metrics.podLabels.refreshInterval", "must be between 10s and 1h, got %s", pl.RefreshInterval)
	}
	for _, x := range c.Metrics.Health.CriticalXIDs {
		if x == 0 || x > 1<<16 {
			bad("metrics.health.criticalXIDs", "XID %d is not an NVIDIA Xid number", x)
		}
	}
	if ta := c.Metrics.Health.ThrottleAfter; ta < c.Metrics.SampleInterval || ta > 24*time.Hour {
		bad("metrics.health.throttleAfter", "must be between metrics.sampleInterval (%s) and 24h, got %s", c.Metrics.SampleInterval, ta)
	}
	if tt := c.Metrics.Health.Taint; len(tt.Key) > 317 || !taintKey.MatchString(tt.Key) {
		bad("metrics.health.taint.key", "must be a label key such as gpunode.dev/gpu-unhealthy, got %q", tt.Key)
	}
	if e := c.Metrics.Health.Taint.Effect; !slices.Contains([]string{"NoSchedule", "PreferNoSchedule", "NoExecute"}, e) {
		bad("metrics.health.taint.effect", "must be NoSchedule, PreferNoSchedule or NoExecute, got %q", e)
	}
	errs = append(errs, c.Metrics.RDMAHealth.validate(c.Metrics.SampleInterval, c.Metrics.Health.Taint.Key)...)
	if _, err := ParseLevel(c.Log.Level); err != nil {
		bad("log.level", "%v", err)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", "must be text or json, got %q", c.Log.Format)
	}
	errs = append(errs, c.Tuning.validate()...)
	errs = append(errs, c.Verify.validate()...)
	errs = append(errs, c.Probe.validate()...)
	return errors.Join(errs...)
}

// checkListenAddress checks what net.Listen("tcp", addr) would check
// without binding: host:port with a port from 0 to 65535 (or a service
// name of /etc/services). The host is left to the resolver.
func checkListenAddress(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("must be host:port (such as :9835), got %q", addr)
	}
	if n, err := strconv.Atoi(port); err == nil {
		if n < 0 || n > 65535 {
			return fmt.Errorf("port %d of %q is out of range (0 to 65535)", n, addr)
		}
		return nil
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("port %q of %q is neither a number from 0 to 65535 nor a known service", port, addr)
	}
	return nil
}

// ParseLevel maps a level name to slog's.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown level %q (want debug, info, warn or error)", s)
}

// RestartNeeded lists the settings that differ between old and new and only
// take effect on restart (the rest are applied on reload).
func RestartNeeded(old, new Config) []string {
	var keys []string
	if old.HostRoot != new.HostRoot {
		keys = append(keys, "hostRoot")
	}
	if old.NodeName != new.NodeName {
		keys = append(keys, "nodeName")
	}
	if old.GPU != new.GPU {
		keys = append(keys, "gpu")
	}
	if old.Publish != new.Publish {
		keys = append(keys, "publish")
	}
	// The health taints are applied on reload (it is how an operator lifts
	// the taint of a GPU whose critical XID stays until a restart).
	oldM, newM := old.Metrics, new.Metrics
	oldM.Health.Taint, newM.Health.Taint = Taint{}, Taint{}
	oldM.RDMAHealth.Taint, newM.RDMAHealth.Taint = Taint{}, Taint{}
	if !reflect.DeepEqual(oldM, newM) {
		keys = append(keys, "metrics")
	}
	if old.Log.Format != new.Log.Format {
		keys = append(keys, "log.format")
	}
	return keys
}
