// Package agent is the gpunode daemon: it runs the discovery sources on a
// schedule, keeps the latest snapshot, reports changes, serves metrics and
// health, and talks to systemd.
package agent

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/internal/hostfs"
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
	// pfc reads the PFC state of RoCE netdevs (DCB over netlink on a
	// host, a table on a simulated node); nil leaves PFC unknown.
	pfc rdma.PFCReader
}

// NewDiscoverer wires the sources for a host root and GPU backends.
// simulated names the simulated node, or is empty on real hardware.
func NewDiscoverer(fsys hostfs.FS, backends []gpu.Backend, timeout time.Duration, simulated string) *Discoverer {
	d := &Discoverer{}
	*d = Discoverer{
		simulated: simulated,
		topology: &source.Runner[topology.Topology]{Name: "topology", Timeout: timeout,
			Fn: func(ctx context.Context) (topology.Topology, error) { return topology.Discover(ctx, fsys) }},
		rdma: &source.Runner[[]rdma.Device]{Name: "rdma", Timeout: timeout,
			Fn: func(ctx context.Context) ([]rdma.Device, error) {
				devs, err := rdma.Discover(ctx, fsys)
				return devs, errors.Join(err, rdma.AddPFC(ctx, devs, d.pfc))
			}},
		settings: &source.Runner[[]tuning.Setting]{Name: "settings", Timeout: timeout,
			Fn: func(ctx context.Context) ([]tuning.Setting, error) {
				return tuning.Observe(ctx, fsys, tuning.ObservedSysctls)
			}},
		now: time.Now,
	}
	for _, b := range backends {
		d.gpus = append(d.gpus, &source.Runner[gpu.Inventory]{Name: b.Name(), Timeout: timeout, Fn: b.Inventory})
	}
	return d
}

// SetPFC sets where RoCE ports' PFC state is read from (Env.PFC).
func (d *Discoverer) SetPFC(r rdma.PFCReader) { d.pfc = r }

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
