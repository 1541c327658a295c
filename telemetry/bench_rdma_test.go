package telemetry

import (
	"context"
	"testing"

	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/sim"
)

// BenchmarkReadCounters is one sampling round's RDMA read of the simulated
// HGX H100 RoCE server (10 mlx5 ports): sysfs counters and port facts,
// and with "pause" also each netdev's driver statistics (the simulated
// files; a host's ioctls cost what its driver takes).
func BenchmarkReadCounters(b *testing.B) {
	for _, pause := range []bool{false, true} {
		name := map[bool]string{false: "sysfs", true: "pause"}[pause]
		b.Run(name, func(b *testing.B) {
			n := newNode(b, "h100-roce")
			r := rdma.NewReader(n.fs)
			if pause {
				r.WithDriverStats(sim.DriverStats{Root: n.Root})
			}
			for b.Loop() {
				ports, err := r.ReadCounters(context.Background())
				if err != nil || len(ports) != 10 {
					b.Fatal(len(ports), err)
				}
			}
		})
	}
}
