package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestProbeConfig(t *testing.T) {
	d := Default().Probe
	if d.Enabled || d.ListenAddress != ":9836" || d.TokenFile != "/etc/gpunode/probe/token" || !d.Loopback ||
		d.PeerSelector != "app.kubernetes.io/name=gpunode-agent" || d.Interval != 10*time.Minute || d.GPUMemoryBytes != 4<<20 {
		t.Errorf("defaults %+v", d)
	}
	c, err := Parse([]byte(`
probe:
  enabled: true
  listenAddress: 0.0.0.0:19836
  tokenFile: /run/token
  interval: 2m
  loopback: false
  randomPeers: 2
  peerSelector: app=agent,tier in (gpu)
  namespace: gpunode-system
  timeout: 20s
  kinds: [read_bw, write_lat, write_bw]
  gpuMemoryBytes: 0
  thresholds:
    minBandwidthBytesPerSecond: 1e10
    minLineRateFraction: 0.8
    maxLatencyP50: 10us
  loopbackThresholds:
    minBandwidthBytesPerSecond: 2e10
    maxLatencyP50: 5us
`))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Probe
	if !slices.Equal(p.Kinds, []string{"read_bw", "write_lat", "write_bw"}) || !slices.Equal(d.Kinds, []string{"write_bw", "send_lat"}) {
		t.Errorf("kinds %v, default %v", p.Kinds, d.Kinds)
	}
	if !p.Enabled || p.RandomPeers != 2 || p.GPUMemoryBytes != 0 || p.Loopback || p.Namespace != "gpunode-system" || p.Thresholds.MaxLatencyP50 != 10*time.Microsecond ||
		p.Thresholds.MinBandwidthBytesPerSecond != 1e10 || p.Thresholds.MinLineRateFraction != 0.8 ||
		p.LoopbackThresholds.MinBandwidthBytesPerSecond != 2e10 || p.LoopbackThresholds.MaxLatencyP50 != 5*time.Microsecond {
		t.Errorf("parsed %+v", p)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"probe:\n  listenAddress: 9836\n", "probe.listenAddress: must be host:port"},
		{"probe:\n  listenAddress: ':70000'\n", "probe.listenAddress: port 70000"},
		{"probe:\n  tokenFile: token\n", "probe.tokenFile: must be an absolute path"},
		{"probe:\n  interval: 1s\n", "probe.interval: must be at least 10s"},
		{"probe:\n  timeout: 50m\n", "probe.timeout: must be between 1s and 5m"},
		{"probe:\n  gpuMemoryBytes: 4096\n", "probe.gpuMemoryBytes: must be 0 (never touch GPU memory) or between 65536"},
		{"probe:\n  gpuMemoryBytes: 1073741824\n", "probe.gpuMemoryBytes: must be 0"},
		{"probe:\n  interval: 1m\n  timeout: 30s\n", "at most a quarter of probe.interval"},
		{"probe:\n  randomPeers: -1\n", "probe.randomPeers"},
		{"probe:\n  randomPeers: 1000\n", "probe.randomPeers"},
		{"probe:\n  peerSelector: 'app in ('\n", "probe.peerSelector"},
		{"probe:\n  peerSelector: ''\n", "probe.peerSelector"},
		{"probe:\n  namespace: Kube_System\n", "probe.namespace"},
		{"probe:\n  thresholds:\n    minLineRateFraction: 1.5\n", "probe.thresholds.minLineRateFraction"},
		{"probe:\n  thresholds:\n    minBandwidthBytesPerSecond: -1\n", "probe.thresholds.minBandwidthBytesPerSecond"},
		{"probe:\n  thresholds:\n    maxLatencyP50: -1s\n", "probe.thresholds.maxLatencyP50"},
		{"probe:\n  thresholds:\n    maxLatency: 1s\n", `unknown key "maxLatency" in probe.thresholds`},
		{"probe:\n  enable: true\n", `unknown key "enable" in probe`},
		{"probe:\n  kinds: []\n", "probe.kinds: must name at least one of write_bw, send_lat, read_bw, write_lat"},
		{"probe:\n  kinds: [write_bw, atomic_bw]\n", `probe.kinds: "atomic_bw" is not one of`},
		{"probe:\n  kinds: [read_bw, read_bw]\n", `probe.kinds: "read_bw" is named twice`},
		{"probe:\n  interval: soon\n", "cannot unmarshal"},
	} {
		if _, err := Parse([]byte(tc.yaml)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
