package sim

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
)

// gb200NVL is one compute tray of a GB200 NVL72 rack: two Grace Blackwell
// superchips, each a 72-core Grace CPU (its own NUMA node, no SMT) and two
// GB200 GPUs; NVLink 5 into the rack's NVLink switch trays (no NVSwitch
// on the tray's PCI), whose fabric manager has registered every GPU in
// one clique; IMEX channel 0 and the nvidia-imex daemon for the rack's 18
// trays.
//
// What a real tray shows (nvidia-smi, nvidia-smi topo -m and lspci in a
// public RHEL4NV GB200 OpenShift demo, NVIDIA/mig-parted#227,
// NVIDIA/kubevirt-gpu-device-plugin#154, sgl-project/sglang#11208): four
// "NVIDIA GB200" GPUs, 10de:2941 subsystem 10de:2046, CPUs 0-71 on node 0
// with GPUs 0-1 and 72-143 on node 1 with GPUs 2-3, and eight mlx5
// devices: four single-port ConnectX-7 (the compute fabric, one per GPU,
// NDR InfiniBand) and two dual-port BlueField-3 (frontend and storage,
// RoCE), every NIC SYS to every GPU, that is on a Grace root port of its
// own.
//
// Simplified here: the tray's PCI domains (GPUs in 0008, 0009, 0018, 0019)
// are folded into domain 0000, since the builder and the predictable
// netdev names it derives know no other; each BlueField-3 shows its first
// port only; the GPU memory NUMA nodes the driver onlines in NUMA mode are
// left out, so NVML reports each GPU's Grace node (a real tray reports the
// GPU memory node, 2, 10, 18 and 26 in sglang#11208, or N/A);
// /proc/interrupts keeps the builder's x86 interrupt controllers.
func gb200NVL(b *builder) *nvmlfake.Machine {
	drv := nvidiaDriver{version: "580.126.09", open: true, built: "Wed Jan  7 22:33:56 UTC 2026"}
	b.system(system{
		sockets: 2, cores: 72, threads: 1,
		memKB:   []uint64{493686016, 494802944},
		cmdline: "console=ttyAMA0,115200n8 earlycon iommu.passthrough=1 init_on_alloc=0 nouveau.modeset=0 rd.driver.blacklist=nouveau",
		// GB200 needs the open kernel modules; GPUDirect RDMA goes through
		// dma-buf, so no nvidia_peermem.
		modules: slices.Concat(nvidiaModules(true, false), rdmaModules(true), graceModules()),
		nvidia:  &drv,
		daemons: []string{"nvidia-persistenced", "nvidia-imex"},
		arch:    "aarch64",
	})
	m := &nvmlfake.Machine{Model: nvmlfake.GB200, Seed: b.name, DriverVersion: drv.version, CUDAVersion: 13000}
	cluster := b.uuid("nvl72-cluster")
	raw, err := hex.DecodeString(strings.ReplaceAll(cluster, "-", ""))
	if err != nil || len(raw) != 16 {
		b.t.fail(fmt.Errorf("cluster UUID %q: %v", cluster, err))
	}
	copy(m.FabricCluster[:], raw)
	// A clique id as the fabric manager of a real rack assigned one
	// (leptonai/gpud#1106).
	m.FabricClique = 4026

	b.graceBoot()
	lid := 0x10 + int(b.hash("lid")%0x1000)
	for socket := range 2 {
		base := 0x10 * socket
		for i := range 2 {
			rail := 2*socket + i
			rp := b.graceRootPort(base+0x02+2*i, socket)
			b.mlx5(rp, mlx5{
				rdma: fmt.Sprintf("mlx5_%d", 3*socket+i), id: connectX7(true), hca: cx7HCA(), ib: true,
				rate: "400 Gb/sec (4X NDR)", speed: 400000, mtu: 4092, lid: lid + rail, vector: 32,
			})
		}
		b.mlx5(b.graceRootPort(base+0x06, socket), mlx5{
			rdma: fmt.Sprintf("mlx5_%d", 3*socket+2), id: blueField3(), hca: bf3HCA(),
			rate: "200 Gb/sec (4X HDR)", speed: 200000, mtu: 9000,
			ipv4: [4]byte{10, 200, byte(socket), 11}, vector: 32,
		})
		for i := range 2 {
			m.GPUs = append(m.GPUs, b.gpu(b.graceRootPort(base+0x08+2*i, socket), gb200GPU()))
		}
	}
	b.imex(18)
	return m
}

// gb200GPU is the GPU of a Grace Blackwell superchip as lspci shows it.
func gb200GPU() pciID {
	return pciID{class: "0x030200", vendor: "0x10de", device: "0x2941", subVendor: "0x10de", subDevice: "0x2046", revision: "0xa1", driver: "nvidia", gen: 5, width: 16}
}

// graceRootPortID is a Grace PCIe root port: NVIDIA 10de:22b2, as lspci
// lists the root ports of a Grace Hopper node.
func graceRootPortID() pciID {
	return pciID{class: "0x060400", vendor: "0x10de", device: "0x22b2", subVendor: "0x10de", subDevice: "0x0000", revision: "0x01", driver: "pcieport", gen: 5, width: 16}
}

// graceRootPort adds host bridge pci0000:<root> of a Grace CPU with its
// root port 00.0, bus root+1 behind it: every device of the tray sits
// directly on a root port.
func (b *builder) graceRootPort(root, numa int) *pciDev {
	rp := b.bridge(b.hostBridge(root, numa), 0x00, root+1, graceRootPortID())
	rp.irqs(false, "PCIe PME, aerdrv")
	return rp
}

// graceBoot adds the boot NVMe drive on Grace 0's first root port.
func (b *builder) graceBoot() {
	nvme := b.endpoint(b.graceRootPort(0x00, 0), 0, nvmeSSD())
	names := []string{"nvme0q0"}
	for q := 1; q <= 8; q++ {
		names = append(names, fmt.Sprintf("nvme0q%d", q))
	}
	nvme.irqs(true, names...)
}

// graceModules are baseModules without the x86 ones (RAPL, AES-NI) and
// with Grace's CPU PMU and Arm crypto extension drivers.
func graceModules() []module {
	var m []module
	for _, x := range baseModules() {
		if !strings.HasPrefix(x.name, "intel_") && x.name != "aesni_intel" {
			m = append(m, x)
		}
	}
	return append(m,
		module{name: "nvidia_cspmu", size: 16384, deps: []string{"arm_cspmu_module"}},
		module{name: "arm_cspmu_module", size: 24576},
		module{name: "sha3_ce", size: 12288},
		module{name: "sm4_ce_gcm", size: 16384},
	)
}

// imex writes what NVIDIA's IMEX service leaves on a node of a multi-node
// NVLink domain of trays nodes: the driver's nvidia-caps-imex-channels
// character device in /proc/devices (its major is allocated when the
// module loads), channel 0's device node, the daemon's config and the
// domain's node addresses (the daemon itself is among the processes).
func (b *builder) imex(trays int) {
	const major = 508
	b.t.file("/proc/devices", fmt.Sprintf(`Character devices:
  1 mem
  4 /dev/vc/0
  4 tty
  5 /dev/tty
  5 /dev/console
  5 /dev/ptmx
  7 vcs
 10 misc
 13 input
 89 i2c
128 ptm
136 pts
195 nvidia
195 nvidiactl
226 drm
231 infiniband_verbs
231 infiniband_mad
234 nvidia-uvm
235 nvidia-caps
242 nvme-generic
243 nvme
%d nvidia-caps-imex-channels
509 aux
510 ipmidev

Block devices:
259 blkext
  7 loop
  8 sd
  9 md
253 device-mapper
254 mdp
`, major))
	b.t.file("/dev/nvidia-caps-imex-channels/channel0", "")
	b.t.file("/etc/nvidia-imex/config.cfg", "SERVER_PORT=50000\nIMEX_CONN_WAIT_TIMEOUT=70\nIMEX_WAIT_FOR_QUORUM=FULL\nIMEX_NODE_CONFIG_FILE=/etc/nvidia-imex/nodes_config.cfg\n")
	var nodes strings.Builder
	for i := range trays {
		fmt.Fprintf(&nodes, "10.114.%d.%d\n", i/8, 10+i%8)
	}
	b.t.file("/etc/nvidia-imex/nodes_config.cfg", nodes.String())
}
