// Package agent is the gpunode daemon: it runs the discovery sources on a
// schedule, keeps the latest snapshot, reports changes, serves metrics and
// health, and talks to systemd.
package discovery

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/snapshot"
	"github.com/gpunode/gpunode/topology"
	"github.com/gpunode/gpunode/tuning"
)

// Discoverer runs every discovery source concurrently, each under its own
// timeout, and assembles a snapshot. One failing source never hides the
// others. It is used from one goroutine at a time.
type Discoverer struct {
	simulated string
	topology  *source.Runner[topology.Topology]
	rdma      *source.Runner[[]rdma.Device]
	settings  *source.Runner[[]tuning.Setting]
	gpus      []*source.Runner[gpu.Inventory]
	now       func() time.Time
}

// New wires the sources over an environment: its host root, GPU
// backends and PFC reader, each source under timeout.
func New(env *Env, timeout time.Duration) *Discoverer {
	fsys, pfc := env.FS, env.PFC
	// One reader for every run, so an HCA whose read hangs is not read
	// again on top of it; the others are read meanwhile.
	devices := rdma.NewReader(fsys)
	d := &Discoverer{
		simulated: env.Simulated,
		topology: &source.Runner[topology.Topology]{Name: source.Topology, Timeout: timeout,
			Fn: func(ctx context.Context) (topology.Topology, error) { return topology.Discover(ctx, fsys) }},
		rdma: &source.Runner[[]rdma.Device]{Name: source.RDMA, Timeout: timeout,
			Fn: func(ctx context.Context) ([]rdma.Device, error) {
				devs, err := devices.Discover(ctx)
				return devs, errors.Join(err, rdma.AddPFC(ctx, devs, pfc))
			}},
		settings: &source.Runner[[]tuning.Setting]{Name: source.Settings, Timeout: timeout,
			Fn: func(ctx context.Context) ([]tuning.Setting, error) {
				return tuning.Observe(ctx, fsys, tuning.ObservedSysctls)
			}},
		now: time.Now,
	}
	for _, b := range env.Backends {
		d.gpus = append(d.gpus, &source.Runner[gpu.Inventory]{Name: b.Name(), Timeout: timeout, Fn: b.Inventory})
	}
	return d
}

// SetTimeout changes the per-source timeout for later runs.
func (d *Discoverer) SetTimeout(t time.Duration) {
	d.topology.Timeout, d.rdma.Timeout, d.settings.Timeout = t, t, t
	for _, g := range d.gpus {
		g.Timeout = t
	}
}

// Discover runs all sources once and returns the new snapshot.
func (d *Discoverer) Discover(ctx context.Context) *snapshot.Snapshot {
	in := snapshot.Inputs{TakenAt: d.now(), Simulated: d.simulated}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		statuses []source.Status
	)
	run := func(f func() source.Status) {
		wg.Go(func() {
			st := f()
			mu.Lock()
			statuses = append(statuses, st)
			mu.Unlock()
		})
	}
	run(func() (st source.Status) { in.Topology, st = d.topology.Run(ctx); return })
	run(func() (st source.Status) { in.RDMA, st = d.rdma.Run(ctx); return })
	run(func() (st source.Status) { in.Settings, st = d.settings.Run(ctx); return })
	invs := make([]gpu.Inventory, len(d.gpus))
	invStatus := make([]source.Status, len(d.gpus))
	for i, g := range d.gpus {
		run(func() source.Status { invs[i], invStatus[i] = g.Run(ctx); return invStatus[i] })
	}
	wg.Wait()
	// The first backend that found GPUs supplies the inventory; failing
	// that, the first that ran cleanly (a driver with no GPUs still has a
	// version worth reporting).
	for _, usable := range []func(int) bool{
		func(i int) bool { return invStatus[i].State != source.Absent && len(invs[i].Devices) > 0 },
		func(i int) bool { return invStatus[i].State == source.OK },
	} {
		for i := range invs {
			if in.GPU == nil && usable(i) {
				in.GPU = &invs[i]
			}
		}
	}
	in.Sources = statuses
	return snapshot.Build(in)
}
