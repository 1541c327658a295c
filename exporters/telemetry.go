package exporters

import (
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpunode/gpunode/snapshot"
	"github.com/gpunode/gpunode/telemetry"
)

// TelemetryOptions configure the telemetry collector.
type TelemetryOptions struct {
	// DCGMCompat adds dcgm-exporter's metric names, units and labels.
	DCGMCompat bool
	// Hostname is the Hostname label of DCGM-compatible series (the node
	// name, as dcgm-exporter sets it in Kubernetes); empty takes the host's
	// name from the snapshot.
	Hostname string
}

// telemetryCollector exports GPU, RDMA and health metrics from the latest
// sampler frame and the identity facts of the latest snapshot. A scrape
// reads two pointers and never touches a device; the metrics built for a
// (frame, snapshot) pair are kept and sent again until either changes, so
// scrapes between sampling rounds cost only the encoding.
//
// It is an unchecked collector (Describe sends nothing): per-GPU series of
// a GPU held by a pod carry pod, namespace and container labels that the
// series of free GPUs do not have.
type telemetryCollector struct {
	frame func() *telemetry.Frame
	snap  func() *snapshot.Snapshot
	o     TelemetryOptions
	gpu   gpuFamilies
	rdma  rdmaFamilies
	rdmaH rdmaHealthFamilies
	dcgm  dcgmFamilies
	kern  kernelFamilies
	pcie  pcieFamilies
	pods  podFamilies
	// podLabels are the pod label names the families were made with
	// (podlabels; fixed for the agent's life, read from the frames).
	podLabels string

	mu        sync.Mutex
	lastFrame *telemetry.Frame
	lastSnap  *snapshot.Snapshot
	cached    []prometheus.Metric
}

// NewTelemetryCollector exports what the sampler measures. frame and snap
// return nil before the first round and discovery.
func NewTelemetryCollector(frame func() *telemetry.Frame, snap func() *snapshot.Snapshot, o TelemetryOptions) prometheus.Collector {
	return &telemetryCollector{frame: frame, snap: snap, o: o,
		gpu: newGPUFamilies(), rdma: newRDMAFamilies(), rdmaH: newRDMAHealthFamilies(), dcgm: newDCGMFamilies(), kern: newKernelFamilies(), pcie: newPCIeFamilies(), pods: newPodFamilies(nil)}
}

// NewTelemetryPart is the telemetry collector as a cached part of
// /metrics: encoded once per sampler frame and snapshot.
func NewTelemetryPart(frame func() *telemetry.Frame, snap func() *snapshot.Snapshot, o TelemetryOptions) (*Part, error) {
	c := NewTelemetryCollector(frame, snap, o)
	return Cached(c, func() any { return telemetryVersion{frame(), snap()} })
}

// telemetryVersion is what the telemetry output is a function of.
type telemetryVersion struct {
	f *telemetry.Frame
	s *snapshot.Snapshot
}

func (c *telemetryCollector) Describe(chan<- *prometheus.Desc) {}

func (c *telemetryCollector) Collect(ch chan<- prometheus.Metric) {
	f, s := c.frame(), c.snap()
	c.mu.Lock()
	if f != c.lastFrame || s != c.lastSnap || c.cached == nil {
		c.cached = c.build(f, s)
		c.lastFrame, c.lastSnap = f, s
	}
	metrics := c.cached
	c.mu.Unlock()
	for _, m := range metrics {
		ch <- m
	}
}

// build makes every metric for a frame and snapshot, in a fixed order.
func (c *telemetryCollector) build(f *telemetry.Frame, s *snapshot.Snapshot) []prometheus.Metric {
	out := make([]prometheus.Metric, 0, 1024)
	emit := func(m prometheus.Metric) { out = append(out, m) }
	if f == nil {
		return out
	}
	if names := f.PodLabels.Names(); strings.Join(names, ",") != c.podLabels {
		c.podLabels = strings.Join(names, ",")
		c.gpu.allocation, c.gpu.mig.allocation, c.pods = allocationFamily(names), migAllocationFamily(names), newPodFamilies(names)
	}
	c.gpu.collect(emit, f, s)
	c.pods.collect(emit, f)
	c.rdma.collect(emit, f, s)
	c.rdmaH.collect(emit, f)
	c.kern.collect(emit, f)
	c.pcie.collect(emit, f)
	if c.o.DCGMCompat {
		host := c.o.Hostname
		if host == "" && s != nil {
			host = s.Host.Hostname
		}
		c.dcgm.collect(emit, f, host)
	}
	return out
}
