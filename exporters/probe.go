package exporters

import (
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpunode/gpunode/rdma/probe"
)

// probeCollector exports the RDMA probes' last round and the probe
// server's refusals. It only reads memory: a scrape never starts a probe.
type probeCollector struct {
	round   func() *probe.Round
	refused func() map[string]uint64

	bandwidth, lineRate, latency, cpuPerGB, success, lastRun, refusedTotal *prometheus.Desc
}

// NewProbeCollector exports the last round and the probe server's
// refusals of unauthenticated peers; round returns nil while probes are
// off or before the first round, refused nil while probes are off.
func NewProbeCollector(round func() *probe.Round, refused func() map[string]uint64) prometheus.Collector {
	return &probeCollector{
		round:   round,
		refused: refused,
		refusedTotal: prometheus.NewDesc("gpunode_rdma_probe_refused_total",
			"Connections to the probe server refused before the peer proved it holds the probe token: reason bad_request (malformed, truncated or no request), unauthorized (wrong token), version (another protocol version).",
			[]string{"reason"}, nil),
		bandwidth: prometheus.NewDesc("gpunode_rdma_probe_bandwidth_bytes_per_second",
			"Bandwidth the last probe measured: kind write_bw is RDMA WRITE as ib_write_bw measures it, read_bw RDMA READ as ib_read_bw (a bidirectional probe: both directions' sum), tcp_bw the TCP baseline to the same peer. peer is a node name (the link and fabric), or loopback (a check of the HCA and its driver: the traffic turns around inside the adapter and never meets the link); peer_device is the peer's device on the rail probed (empty for loopback, the TCP baseline and probes without rails); memory is where this end's buffers were, host or gpu (GPUDirect RDMA: the memory of GPU gpu, the GPU nearest device; the peer's in the GPU nearest its port), gpu empty for host memory.",
			[]string{"device", "port", "peer", "peer_device", "kind", "memory", "gpu"}, nil),
		lineRate: prometheus.NewDesc("gpunode_rdma_probe_line_rate_ratio",
			"RDMA WRITE bandwidth (write_bw) of the last probe to a peer over the data rate of the slower of the two ports (0 to 1; a bidirectional probe over twice it); loopback probes have none, their traffic never meets the link.",
			[]string{"device", "port", "peer", "peer_device", "memory", "gpu"}, nil),
		latency: prometheus.NewDesc("gpunode_rdma_probe_latency_seconds",
			"Half round trip of the last probe: kind send_lat is SEND/RECV as ib_send_lat measures it, write_lat RDMA WRITE as ib_write_lat, tcp_lat the TCP baseline; quantile 0 is the minimum, 1 the maximum; memory and gpu as for the bandwidth.",
			[]string{"device", "port", "peer", "peer_device", "kind", "memory", "gpu", "quantile"}, nil),
		cpuPerGB: prometheus.NewDesc("gpunode_rdma_probe_cpu_seconds_per_gigabyte",
			"CPU seconds the probe threads of both ends spent per 1e9 bytes moved by the last bandwidth probe of this kind.",
			[]string{"device", "port", "peer", "peer_device", "kind", "memory", "gpu"}, nil),
		success: prometheus.NewDesc("gpunode_rdma_probe_success",
			"1 if the last probe of this kind ran to the end, 0 if it failed; device and port are this node's port (its rail, for per-rail peer probes), peer_device is empty for a failure; memory and gpu as for the bandwidth.",
			[]string{"device", "port", "peer", "peer_device", "kind", "memory", "gpu"}, nil),
		lastRun: prometheus.NewDesc("gpunode_rdma_probe_last_run_timestamp_seconds",
			"Unix time when the last round of RDMA probes started.", nil, nil),
	}
}

func (c *probeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.bandwidth, c.lineRate, c.latency, c.cpuPerGB, c.success, c.lastRun, c.refusedTotal} {
		ch <- d
	}
}

func (c *probeCollector) Collect(ch chan<- prometheus.Metric) {
	if c.refused != nil {
		counts := c.refused()
		for _, reason := range probe.RefusalReasons {
			if n, ok := counts[reason]; ok {
				ch <- prometheus.MustNewConstMetric(c.refusedTotal, prometheus.CounterValue, float64(n), reason)
			}
		}
	}
	r := c.round()
	if r == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.lastRun, prometheus.GaugeValue, float64(r.At.UnixNano())/1e9)
	for _, res := range r.Results {
		dev, port, pdev := res.Local.Device, "", res.PeerDevice()
		if dev != "" { // the TCP baseline has no RDMA port
			port = strconv.Itoa(res.Local.Port)
		}
		var gpuIndex *int
		if res.GPU != nil {
			gpuIndex = &res.GPU.Index
		}
		mem, gpu := memoryLabels(gpuIndex)
		ch <- prometheus.MustNewConstMetric(c.success, prometheus.GaugeValue, 1, dev, port, res.Peer, pdev, res.Kind, mem, gpu)
		if res.BytesPerSecond > 0 {
			ch <- prometheus.MustNewConstMetric(c.bandwidth, prometheus.GaugeValue, res.BytesPerSecond, dev, port, res.Peer, pdev, res.Kind, mem, gpu)
		}
		if res.CPUSecondsPerGB > 0 {
			ch <- prometheus.MustNewConstMetric(c.cpuPerGB, prometheus.GaugeValue, res.CPUSecondsPerGB, dev, port, res.Peer, pdev, res.Kind, mem, gpu)
		}
		// The line-rate series has no kind label: RDMA WRITE's fills it,
		// and a read_bw of the same round to the same peer would collide.
		if res.LineRateFraction > 0 && res.Kind == probe.KindWriteBW {
			ch <- prometheus.MustNewConstMetric(c.lineRate, prometheus.GaugeValue, res.LineRateFraction, dev, port, res.Peer, pdev, mem, gpu)
		}
		if l := res.Latency; l != nil {
			for _, q := range []struct {
				q string
				v float64
			}{{"0", l.Min.Seconds()}, {"0.5", l.P50.Seconds()}, {"0.99", l.P99.Seconds()}, {"0.999", l.P999.Seconds()}, {"1", l.Max.Seconds()}} {
				ch <- prometheus.MustNewConstMetric(c.latency, prometheus.GaugeValue, q.v, dev, port, res.Peer, pdev, res.Kind, mem, gpu, q.q)
			}
		}
	}
	for _, f := range r.Failures {
		dev, port, _ := strings.Cut(f.Port, "/")
		peer := f.Peer
		if peer == "" {
			peer = "loopback"
		}
		mem, gpu := memoryLabels(f.GPU)
		// The peer's device is unknown: its server answered with an error.
		ch <- prometheus.MustNewConstMetric(c.success, prometheus.GaugeValue, 0, dev, port, peer, "", f.Kind, mem, gpu)
	}
}

// memoryLabels are the memory and gpu labels of a probe whose buffers
// were in the memory of the GPU with this index, or in host memory when
// it is nil.
func memoryLabels(index *int) (memory, gpu string) {
	if index == nil {
		return "host", ""
	}
	return "gpu", strconv.Itoa(*index)
}
