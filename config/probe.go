package config

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	k8slabels "k8s.io/apimachinery/pkg/labels"
)

// Probe configures the daemon's RDMA probes (rdma/probe): a server that
// other nodes' agents probe, and a jittered schedule of loopback probes
// and probes to peers found through the Kubernetes API. Off by default:
// probes move real traffic.
type Probe struct {
	Enabled bool `yaml:"enabled"`
	// ListenAddress is where this agent answers other agents' probes.
	ListenAddress string `yaml:"listenAddress"`
	// TokenFile holds the shared token (the chart mounts a Secret).
	TokenFile string `yaml:"tokenFile"`
	// Interval between rounds; each wait is jittered by up to +-20%.
	Interval time.Duration `yaml:"interval"`
	// Loopback probes every ACTIVE port against itself each round.
	Loopback bool `yaml:"loopback"`
	// RandomPeers is how many peers besides the ring successor each round
	// probes.
	RandomPeers int `yaml:"randomPeers"`
	// PeerSelector selects the agent's own pods (label selector).
	PeerSelector string `yaml:"peerSelector"`
	// Namespace of the agent's pods, the only one peers are looked up in;
	// defaults to $POD_NAMESPACE. Empty (or no Kubernetes): loopback only.
	Namespace string `yaml:"namespace"`
	// Kinds are the RDMA tests each round runs, with perftest's defaults:
	// write_bw, send_lat (the default), read_bw, write_lat.
	Kinds []string `yaml:"kinds"`
	// TCPBaseline also measures TCP to each peer over the same path.
	TCPBaseline bool `yaml:"tcpBaseline"`
	// Rails decides which of a peer's ports each of this node's ports
	// probes: one probe per rail.
	Rails ProbeRails `yaml:"rails"`
	// ServiceLevel (0-15) and TrafficClass (0-255: on RoCE v2 the DSCP
	// and ECN bits) of the RDMA probes' queue pairs, so they travel in
	// the workload's (lossless) class.
	ServiceLevel int `yaml:"serviceLevel"`
	TrafficClass int `yaml:"trafficClass"`
	// GPUMemoryBytes bounds the GPU memory one probe end borrows from a
	// GPU (each round's registration on the GPU's nearest NIC, which
	// gpudirect-rdma-works and the gpudirect-rdma label judge; each
	// round's GPU memory probes; and `probe --memory gpu`): a GPU may be
	// serving a model. 0 never touches GPU memory.
	GPUMemoryBytes int `yaml:"gpuMemoryBytes"`
	// Timeout bounds one probe.
	Timeout time.Duration `yaml:"timeout"`
	// Thresholds judge the probes to peers: the links and the fabric.
	Thresholds ProbeThresholds `yaml:"thresholds"`
	// LoopbackThresholds judge the loopback probes, a check of the HCA
	// and its driver: their traffic turns around inside the adapter (mlx5,
	// InfiniBand) and never meets the cable or the switch, so no line
	// rate applies.
	LoopbackThresholds LoopbackThresholds `yaml:"loopbackThresholds"`
}

// ProbeThresholds decide when a peer probe passed (0 means not checked).
type ProbeThresholds struct {
	// MinBandwidthBytesPerSecond for RDMA WRITE and READ (write_bw,
	// read_bw).
	MinBandwidthBytesPerSecond float64 `yaml:"minBandwidthBytesPerSecond"`
	// MinLineRateFraction of the data rate of the slower port (0..1).
	MinLineRateFraction float64 `yaml:"minLineRateFraction"`
	// MaxLatencyP50 for SEND/RECV and RDMA WRITE half round trips
	// (send_lat, write_lat).
	MaxLatencyP50 time.Duration `yaml:"maxLatencyP50"`
}

// ProbeKinds are the RDMA kinds probe.kinds takes (rdma/probe's).
var ProbeKinds = []string{"write_bw", "send_lat", "read_bw", "write_lat"}

// ProbeRails pairs this node's ports with a peer's (rdma/probe.RailRule).
type ProbeRails struct {
	// Match is index (this node's k-th port against the peer's k-th, the
	// default), subnet (the peer's port on the same RoCE subnet or
	// InfiniBand subnet prefix) or none (one port per peer: the one whose
	// address the control connection uses, as agents before rails did).
	Match string `yaml:"match"`
	// IPv4PrefixLength and IPv6PrefixLength make a RoCE rail's subnet
	// under match subnet.
	IPv4PrefixLength int `yaml:"ipv4PrefixLength"`
	IPv6PrefixLength int `yaml:"ipv6PrefixLength"`
}

// Rail matches of ProbeRails.Match.
const (
	RailsIndex  = "index"
	RailsSubnet = "subnet"
	RailsNone   = "none"
)

// LoopbackThresholds decide when a loopback probe passed (0 means not
// checked).
type LoopbackThresholds struct {
	// MinBandwidthBytesPerSecond for RDMA WRITE and READ.
	MinBandwidthBytesPerSecond float64 `yaml:"minBandwidthBytesPerSecond"`
	// MaxLatencyP50 for SEND/RECV and RDMA WRITE half round trips.
	MaxLatencyP50 time.Duration `yaml:"maxLatencyP50"`
}

// probeSectionNames extends sectionNames for the probe section.
var probeSectionNames = map[string]string{
	"Probe":              "probe",
	"ProbeThresholds":    "probe.thresholds",
	"LoopbackThresholds": "probe.loopbackThresholds",
	"ProbeRails":         "probe.rails",
}

// DefaultProbePeerSelector selects the chart's agent pods.
const DefaultProbePeerSelector = "app.kubernetes.io/name=gpunode-agent"

// DefaultProbe is off; when switched on it probes loopback and the ring
// successor every 10 minutes.
func DefaultProbe() Probe {
	return Probe{
		ListenAddress:  ":9836",
		TokenFile:      "/etc/gpunode/probe/token",
		Interval:       10 * time.Minute,
		Loopback:       true,
		TCPBaseline:    true,
		Kinds:          []string{"write_bw", "send_lat"},
		PeerSelector:   DefaultProbePeerSelector,
		Namespace:      os.Getenv("POD_NAMESPACE"),
		Timeout:        time.Minute,
		GPUMemoryBytes: 4 << 20,
		Rails:          ProbeRails{Match: RailsIndex, IPv4PrefixLength: 24, IPv6PrefixLength: 64},
	}
}

func (p Probe) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if err := checkListenAddress(p.ListenAddress); err != nil {
		bad("probe.listenAddress", "%v", err)
	}
	if p.TokenFile == "" || !filepath.IsAbs(p.TokenFile) {
		bad("probe.tokenFile", "must be an absolute path, got %q", p.TokenFile)
	}
	if p.Interval < 10*time.Second {
		bad("probe.interval", "must be at least 10s, got %s", p.Interval)
	}
	if p.GPUMemoryBytes != 0 && (p.GPUMemoryBytes < 64<<10 || p.GPUMemoryBytes > 256<<20) {
		bad("probe.gpuMemoryBytes", "must be 0 (never touch GPU memory) or between 65536 and 268435456 (256 MiB), got %d", p.GPUMemoryBytes)
	}
	if p.Timeout < time.Second || p.Timeout > 5*time.Minute {
		bad("probe.timeout", "must be between 1s and 5m, got %s", p.Timeout)
	}
	if p.Timeout*4 > p.Interval {
		bad("probe.timeout", "(%s) must be at most a quarter of probe.interval (%s): a round runs several probes", p.Timeout, p.Interval)
	}
	if p.RandomPeers < 0 || p.RandomPeers > 16 {
		bad("probe.randomPeers", "must be between 0 and 16, got %d", p.RandomPeers)
	}
	if _, err := k8slabels.Parse(p.PeerSelector); err != nil || p.PeerSelector == "" {
		bad("probe.peerSelector", "must be a non-empty label selector, got %q", p.PeerSelector)
	}
	if p.Namespace != "" && (len(p.Namespace) > 63 || !labelName.MatchString(p.Namespace)) {
		bad("probe.namespace", "must be a namespace name, got %q", p.Namespace)
	}
	switch p.Rails.Match {
	case RailsIndex, RailsSubnet, RailsNone:
	default:
		bad("probe.rails.match", "must be index, subnet or none, got %q", p.Rails.Match)
	}
	if p.Rails.IPv4PrefixLength < 1 || p.Rails.IPv4PrefixLength > 32 {
		bad("probe.rails.ipv4PrefixLength", "must be between 1 and 32, got %d", p.Rails.IPv4PrefixLength)
	}
	if p.Rails.IPv6PrefixLength < 1 || p.Rails.IPv6PrefixLength > 128 {
		bad("probe.rails.ipv6PrefixLength", "must be between 1 and 128, got %d", p.Rails.IPv6PrefixLength)
	}
	if len(p.Kinds) == 0 {
		bad("probe.kinds", "must name at least one of %s", strings.Join(ProbeKinds, ", "))
	}
	for i, k := range p.Kinds {
		if !slices.Contains(ProbeKinds, k) {
			bad("probe.kinds", "%q is not one of %s", k, strings.Join(ProbeKinds, ", "))
		} else if slices.Contains(p.Kinds[:i], k) {
			bad("probe.kinds", "%q is named twice", k)
		}
	}
	if p.ServiceLevel < 0 || p.ServiceLevel > 15 {
		bad("probe.serviceLevel", "must be between 0 and 15, got %d", p.ServiceLevel)
	}
	if p.TrafficClass < 0 || p.TrafficClass > 255 {
		bad("probe.trafficClass", "must be between 0 and 255, got %d", p.TrafficClass)
	}
	t := p.Thresholds
	if t.MinBandwidthBytesPerSecond < 0 {
		bad("probe.thresholds.minBandwidthBytesPerSecond", "must not be negative, got %g", t.MinBandwidthBytesPerSecond)
	}
	if t.MinLineRateFraction < 0 || t.MinLineRateFraction > 1 {
		bad("probe.thresholds.minLineRateFraction", "must be between 0 and 1, got %g", t.MinLineRateFraction)
	}
	if t.MaxLatencyP50 < 0 {
		bad("probe.thresholds.maxLatencyP50", "must not be negative, got %s", t.MaxLatencyP50)
	}
	lt := p.LoopbackThresholds
	if lt.MinBandwidthBytesPerSecond < 0 {
		bad("probe.loopbackThresholds.minBandwidthBytesPerSecond", "must not be negative, got %g", lt.MinBandwidthBytesPerSecond)
	}
	if lt.MaxLatencyP50 < 0 {
		bad("probe.loopbackThresholds.maxLatencyP50", "must not be negative, got %s", lt.MaxLatencyP50)
	}
	return errs
}
