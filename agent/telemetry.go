package agent

import (
	"context"
	"time"

	"github.com/gpunode/gpunode/config"
	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/kubeapi"
	"github.com/gpunode/gpunode/nodestatus"
	"github.com/gpunode/gpunode/podlabels"
	"github.com/gpunode/gpunode/podresources"
	"github.com/gpunode/gpunode/telemetry"
)

// startSampler starts the background sampler behind the GPU, RDMA and
// health metrics in g; stopping g stops it before the GPU backends are
// closed.
func (d *daemon) startSampler(ctx context.Context, g *group) {
	m := d.cfg.Metrics // restart-only (but the taint): reloads keep it, so it is read once
	// The kernel log's journal sits beside tuning's, on the host.
	klog := d.o.Env.KernelLog(d.cfg.Tuning.StateDir)
	o := telemetry.Options{
		KernelLog:    klog,
		Interval:     m.SampleInterval,
		FS:           d.o.Env.FS,
		Backends:     d.o.Env.Backends,
		CriticalXIDs: m.Health.CriticalXIDs,
		Traffic:      d.o.Env.Traffic,
		DriverStats:  d.o.Env.DriverStats,
		OnCondition:  d.gpuCondition,
		// The RDMA thresholds are restart-only; their taint is reloadable.
		RDMAHealth:      m.RDMAHealth.Options(),
		OnRDMACondition: d.rdmaCondition,
		Logger:          d.log,
	}
	o.ThrottleAfter = m.Health.ThrottleAfter
	var pods *podresources.Client
	if m.PodResourcesSocket != "" {
		pods = podresources.New(m.PodResourcesSocket)
		o.Pods = pods
		if len(m.PodLabels.Keys) > 0 {
			labels := d.podLabels(m.PodLabels)
			o.PodLabels = labels
			// Refreshed on its own cadence, before and apart from the
			// sampler's rounds, which only read its latest view.
			g.start(ctx, labels.Run)
		}
	}
	d.sampler = telemetry.New(o)
	g.start(ctx, func(ctx context.Context) {
		defer func() {
			if err := klog.Close(); err != nil {
				d.log.Debug("close kernel log", "err", err)
			}
			if pods == nil {
				return
			}
			if err := pods.Close(); err != nil {
				d.log.Debug("close kubelet pod-resources connection", "err", err)
			}
		}()
		first := make(chan struct{})
		go func() {
			defer close(first)
			select {
			case <-d.sampler.FirstRound():
				d.desired.firstRoundDone()
			case <-ctx.Done():
			}
		}()
		d.sampler.Run(ctx)
		<-first
	})
}

// podLabels makes the cache of the node's pods' labels. Without an API
// client or a node name it reports itself absent, and the series carry
// the label names with empty values.
func (d *daemon) podLabels(c config.PodLabels) *podlabels.Cache {
	list := func(ctx context.Context) ([]kubeapi.Pod, error) {
		return d.o.Kube.ListPodsOnNode(ctx, d.cfg.NodeName)
	}
	if d.o.Kube == nil || d.cfg.NodeName == "" {
		d.log.Warn("metrics.podLabels is set but there is no Kubernetes client or NODE_NAME; pod labels stay empty")
		list = func(context.Context) ([]kubeapi.Pod, error) {
			return nil, source.NewAbsent("no Kubernetes API client or NODE_NAME to list this node's pods")
		}
	}
	return podlabels.New(podlabels.Options{Keys: c.Keys, MaxValues: c.MaxValuesPerLabel, Interval: c.RefreshInterval,
		Timeout: min(c.RefreshInterval, 30*time.Second), List: list})
}

// samplerSources reports the sampler's sources beside discovery's.
func (d *daemon) samplerSources() []source.Status {
	f := d.sampler.Latest()
	if f == nil {
		return nil
	}
	return f.Sources
}

// gpuCondition receives every change of the GPUHealthy condition, from
// the sampler's goroutine. It goes to the publisher at once (with the
// taint it implies) and is logged, with the taint, in every mode.
func (d *daemon) gpuCondition(c nodestatus.Condition) {
	d.logCondition(c, d.desired.gpuCondition(c))
}

// rdmaCondition does what gpuCondition does for RDMAHealthy.
func (d *daemon) rdmaCondition(c nodestatus.Condition) {
	d.logCondition(c, d.desired.rdmaCondition(c))
}

// logCondition logs a condition change with the taint it implies.
func (d *daemon) logCondition(c nodestatus.Condition, tc config.Taint) {
	attrs := []any{"type", c.Type, "status", c.Status, "reason", c.Reason, "message", c.Message}
	if tc.Enabled {
		if taint := taintFor(c, tc); taint != nil {
			attrs = append(attrs, "taint", taint.String())
		} else {
			attrs = append(attrs, "taint", "none")
		}
	}
	if c.Status == nodestatus.True {
		d.log.Info("node condition", attrs...)
	} else {
		d.log.Warn("node condition", attrs...)
	}
}
