package sim

import (
	"context"
	"fmt"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
	"github.com/gpunode/gpunode/rdma"
)

// faults are what a degraded variant plants in an otherwise good node.
// The builder consults them where it writes the affected facts, so the
// file tree and the NVML fake agree.
type faults struct {
	// gpuLink: GPU index -> the PCIe generation and width it trained at.
	gpuLink map[int][2]int
	// nvlinkDown: GPU index -> its NVLink links that are down.
	nvlinkDown map[int][]int
	// rate: RDMA device -> the rate its port trained at.
	rate map[string]string
	// lossy: RDMA devices whose netdev has neither ECN nor PFC.
	lossy map[string]bool
	// nvmlMissing: the NVIDIA library is not there (Node.NVMLMissing).
	nvmlMissing bool
	// kernelXID: GPU index -> an Xid the kernel logged for it before the
	// agent started.
	kernelXID map[int]uint64
	// mlx5Health, aerFatal: RDMA devices whose firmware reported a health
	// syndrome, and on which PCIe AER logged a fatal error, before the
	// agent started.
	mlx5Health, aerFatal []string
	// throttled: GPU index -> when its clocks are held down while the
	// agent runs.
	throttled map[int][]nvmlfake.Throttle
}

// dgxH100IBDegraded is a DGX H100 after a bad day: a GPU whose riser
// trained at Gen4 x8, a GPU with one NVLink down, an HCA whose cable came
// up on two of its four lanes, and in the kernel log from before the agent
// started an Xid 79 on GPU 3 and, on mlx5_1, a firmware health syndrome
// and a fatal PCIe AER error. GPU 6's fan fails DegradedThrottleFrom into
// the run: its hardware thermal slowdown holds from then on. 20 s in
// (after a Prometheus started beside it has scraped it), mlx5_3's link
// drops for 10 s and retrains, and mlx5_4 takes 50 symbol errors a second
// for 10 s; then both stay quiet, so their verdicts recover.
func dgxH100IBDegraded(b *builder) *nvmlfake.Machine {
	b.faults = faults{
		gpuLink:    map[int][2]int{2: {4, 8}},
		nvlinkDown: map[int][]int{5: {7}},
		rate:       map[string]string{"mlx5_6": "200 Gb/sec (2X NDR)"},
		kernelXID:  map[int]uint64{3: 79},
		mlx5Health: []string{"mlx5_1"},
		aerFatal:   []string{"mlx5_1"},
		throttled: map[int][]nvmlfake.Throttle{6: {{From: DegradedThrottleFrom,
			Reasons: gonvml.ClocksThrottleReasonHwThermalSlowdown}}},
	}
	b.runtime = append(b.runtime, DegradedRuntimeFaults...)
	return dgxH100IB(b)
}

// DegradedRuntimeFaults are what dgx-h100-ib-degraded's ports go through
// while it runs.
var DegradedRuntimeFaults = []PortFault{
	{Device: "mlx5_3", Port: 1, Kind: FaultFlap, At: 20 * time.Second, For: 10 * time.Second},
	{Device: "mlx5_4", Port: 1, Kind: FaultErrorBurst, At: 20 * time.Second, For: 10 * time.Second, Counter: "symbol_error", PerSecond: 50},
}

// DegradedThrottleFrom is how long after its NVML fake is built
// dgx-h100-ib-degraded's GPU 6 starts its thermal slowdown: after the
// first rounds, so a run sees it begin.
const DegradedThrottleFrom = 10 * time.Second

// dgxH100IBNoNVML is a DGX H100 as an agent container sees it when the
// DaemonSet runs without the NVIDIA container runtime or driver mounts:
// the host's /sys, /proc and /dev show every GPU bound to nvidia and the
// module loaded, but libnvidia-ml.so.1 is not in the container.
func dgxH100IBNoNVML(b *builder) *nvmlfake.Machine {
	b.faults.nvmlMissing = true
	dgxH100IB(b) // the tree; nothing answers for its GPUs
	return nil
}

// h100RoCELossy is the RoCE server with the GPU-side ports left at a lossy
// configuration: ECN switched off and no PFC, the way a fabric without a
// QoS plan ends up.
func h100RoCELossy(b *builder) *nvmlfake.Machine {
	b.faults.lossy = map[string]bool{}
	for i := range 8 {
		b.faults.lossy[fmt.Sprintf("mlx5_%d", i)] = true
	}
	return h100RoCE(b)
}

// roceQoS writes the ECN switches mlx5 exposes under an Ethernet netdev
// (on for every priority, the driver's default) and records its PFC mask
// for the DCB fake.
func (b *builder) roceQoS(netdevDir, ifname, rdmaName string, pfc uint8) {
	ecn := "1"
	if b.faults.lossy[rdmaName] {
		ecn, pfc = "0", 0
	}
	for _, side := range []string{"roce_np", "roce_rp"} {
		for prio := range 8 {
			b.t.attr(fmt.Sprintf("%s/ecn/%s/enable/%d", netdevDir, side, prio), ecn)
		}
	}
	if b.pfc == nil {
		b.pfc = map[string]uint8{}
	}
	b.pfc[ifname] = pfc
}

// PFCTable answers DCB PFC queries for a simulated node: netdev -> mask of
// priorities with PFC on. Interfaces not in it have no DCB support. It
// is writable (SetPFC), as DCB is on a host, so tuning changes what
// discovery reads next.
type PFCTable map[string]uint8

var _ rdma.PFCReader = PFCTable(nil)

// PFCEnabled implements rdma.PFCReader.
func (t PFCTable) PFCEnabled(_ context.Context, ifname string) (uint8, error) {
	m, ok := t[ifname]
	if !ok {
		return 0, fmt.Errorf("%s: %w", ifname, rdma.ErrNoDCB)
	}
	return m, nil
}

// SetPFC sets the mask of a DCB-capable netdev, as the kernel's
// DCB_CMD_IEEE_SET does; others have no DCB support.
func (t PFCTable) SetPFC(_ context.Context, ifname string, mask uint8) error {
	if _, ok := t[ifname]; !ok {
		return fmt.Errorf("%s: %w", ifname, rdma.ErrNoDCB)
	}
	t[ifname] = mask
	return nil
}
