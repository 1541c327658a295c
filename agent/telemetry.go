package agent

import (
	"context"

	"github.com/gpunode/gpunode/agent/config"
	"github.com/gpunode/gpunode/agent/nodestatus"
	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/podresources"
	"github.com/gpunode/gpunode/telemetry"
	"github.com/gpunode/gpunode/telemetry/health"
)

// startSampler starts the background sampler behind the GPU, RDMA and
// health metrics; the returned function stops it and waits, so the GPU
// backends are closed only after their last use.
func (d *daemon) startSampler(ctx context.Context) (stop func()) {
	m := d.cfg.Metrics // restart-only: reloads keep it, so it is read once
	taint := m.Health.Taint
	o := telemetry.Options{
		Interval:     m.SampleInterval,
		FS:           d.o.FS,
		Backends:     d.o.Backends,
		CriticalXIDs: m.Health.CriticalXIDs,
		Traffic:      d.o.Traffic,
		OnCondition:  func(c nodestatus.Condition) { d.gpuCondition(c, taint) },
		Logger:       d.log,
	}
	var pods *podresources.Client
	if m.PodResourcesSocket != "" {
		pods = podresources.New(m.PodResourcesSocket)
		o.Pods = pods
	}
	d.sampler = telemetry.New(o)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.sampler.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
		if pods != nil {
			if err := pods.Close(); err != nil {
				d.log.Debug("close kubelet pod-resources connection", "err", err)
			}
		}
	}
}

// samplerSources reports the sampler's sources beside discovery's.
func (d *daemon) samplerSources() []source.Status {
	f := d.sampler.Latest()
	if f == nil {
		return nil
	}
	return f.Sources
}

// gpuCondition receives every change of the GPUHealthy condition. It is
// logged, with what the opt-in taint would be; publishing the condition
// and the taint to the Node is the publisher's (it hooks in here).
func (d *daemon) gpuCondition(c nodestatus.Condition, tc config.Taint) {
	attrs := []any{"type", c.Type, "status", c.Status, "reason", c.Reason, "message", c.Message}
	if tc.Enabled {
		taint := health.TaintFor(c, health.TaintOptions{Enabled: true, Key: tc.Key, Effect: tc.Effect})
		if taint != nil {
			attrs = append(attrs, "taint", taint.Key+"="+taint.Value+":"+taint.Effect)
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
