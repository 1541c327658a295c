package sim

import (
	"errors"
	"fmt"
	"slices"

	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
)

// The nodes. Each is a short description on top of the builder helpers;
// bus numbers follow the real machines where known.

// dgxH100IB is a DGX H100: every ConnectX-7 shares a PCIe switch with its
// GPU (rail i: GPU i and mlx5_i), four NVSwitches, an X710 for management.
func dgxH100IB(b *builder) *nvmlfake.Machine {
	drv := nvidiaDriver{version: "550.54.15", built: "Tue Mar  5 22:23:56 UTC 2024"}
	b.system(system{
		sockets: 2, cores: 56, threads: 2,
		memKB:   []uint64{1056499896, 1056931388},
		cmdline: dgxCmdline(),
		modules: slices.Concat(nvidiaModules(false, true), rdmaModules(true), i40eModules(), baseModules()),
		nvidia:  &drv,
	})
	m := &nvmlfake.Machine{Model: nvmlfake.H100, Seed: b.name, DriverVersion: drv.version, CUDAVersion: 12040}
	b.platform(4)
	b.x710(0x2a, 0)
	b.dgxRails(m, h100SXM())
	return m
}

// dgxB200IB is a DGX B200: the DGX H100 layout with B200 GPUs on the open
// kernel module (GPUDirect RDMA through dma-buf, so no nvidia_peermem),
// two NVSwitch chips, and a BlueField-3 per socket as RoCE storage port.
func dgxB200IB(b *builder) *nvmlfake.Machine {
	drv := nvidiaDriver{version: "570.124.06", open: true, built: "Wed Feb 26 01:50:14 UTC 2025"}
	b.system(system{
		sockets: 2, cores: 56, threads: 2,
		memKB:   []uint64{1056497868, 1056935412},
		cmdline: dgxCmdline(),
		modules: slices.Concat(nvidiaModules(true, false), rdmaModules(true), i40eModules(), baseModules()),
		nvidia:  &drv,
	})
	m := &nvmlfake.Machine{Model: nvmlfake.B200, Seed: b.name, DriverVersion: drv.version, CUDAVersion: 12080}
	b.platform(2)
	b.x710(0x2a, 0)
	b.dgxRails(m, b200SXM())
	for i, r := range []struct{ root, numa int }{{0x30, 0}, {0xb0, 1}} {
		rp := b.rootPort(r.root, 0x01, r.root+1, r.numa)
		b.mlx5(rp, mlx5{
			rdma: fmt.Sprintf("mlx5_%d", 8+i), id: blueField3(), hca: bf3HCA(),
			rate: "200 Gb/sec (4X HDR)", speed: 200000, mtu: 9000,
			ipv4: [4]byte{10, 200, byte(i), 11}, vector: 32,
		})
	}
	return m
}

// h100RoCE is an HGX H100 server on a RoCE v2 fabric: eight ConnectX-7 in
// Ethernet mode, one per GPU under the same switch, plus two ConnectX-6 Dx
// frontend ports on socket 0.
func h100RoCE(b *builder) *nvmlfake.Machine {
	drv := nvidiaDriver{version: "550.127.05", open: true, built: "Tue Oct  8 03:08:25 UTC 2024"}
	b.system(system{
		sockets: 2, cores: 48, threads: 2,
		memKB:   []uint64{1056399012, 1056911836},
		cmdline: "console=tty0 console=ttyS0,115200n8 intel_iommu=on iommu=pt",
		modules: slices.Concat(nvidiaModules(true, true), rdmaModules(false), baseModules()),
		nvidia:  &drv,
		// irqbalance runs, as on a stock Ubuntu server.
		daemons: []string{"nvidia-persistenced", "irqbalance"},
	})
	m := &nvmlfake.Machine{Model: nvmlfake.H100, Seed: b.name, DriverVersion: drv.version, CUDAVersion: 12040}
	b.platform(4)
	for i, r := range []struct{ root, numa int }{
		{0x15, 0}, {0x37, 0}, {0x48, 0}, {0x59, 0}, {0x97, 1}, {0xb7, 1}, {0xc8, 1}, {0xd9, 1},
	} {
		sw := b.newSwitch(r.root, r.numa)
		b.mlx5(sw.port(r.root+3), mlx5{
			rdma: fmt.Sprintf("mlx5_%d", i), id: connectX7(false), hca: cx7HCA(),
			rate: "400 Gb/sec (4X NDR)", speed: 400000, mtu: 9000,
			ipv4: [4]byte{10, 0, byte(i), 11}, vector: 32, pfc: 1 << 3,
		})
		m.GPUs = append(m.GPUs, b.gpu(sw.port(r.root+4), h100SXM()))
	}
	for i, root := range []int{0x2a, 0x30} {
		rp := b.rootPort(root, 0x01, root+1, 0)
		b.mlx5(rp, mlx5{
			rdma: fmt.Sprintf("mlx5_%d", 8+i), id: connectX6Dx(), hca: cx6dxHCA(),
			rate: "200 Gb/sec (4X HDR)", speed: 200000, mtu: 1500,
			ipv4: [4]byte{192, 168, byte(10 + i), 11}, vector: 32,
		})
	}
	return m
}

// cpuOnly is a plain CPU server: nothing NVIDIA, nothing RDMA.
func cpuOnly(b *builder) *nvmlfake.Machine {
	b.system(system{
		sockets: 2, cores: 16, threads: 2,
		memKB:   []uint64{131643084, 132098516},
		cmdline: "console=tty0 console=ttyS0,115200n8",
		modules: slices.Concat(i40eModules(), baseModules()),
	})
	b.platform(0)
	b.x710(0x17, 0)
	return nil
}

// dgxRails adds the eight GPU/NIC pairs of a DGX H100/B200 at their real
// bus addresses: one Gen5 switch per CPU PCIe stack, the ConnectX-7 three
// buses below the stack's root bus and the GPU three below that.
func (b *builder) dgxRails(m *nvmlfake.Machine, gpu pciID) {
	lid := 0x10 + int(b.hash("lid")%0x1000)
	for i, r := range []struct{ root, numa int }{
		{0x15, 0}, {0x3d, 0}, {0x4c, 0}, {0x5b, 0}, {0x97, 1}, {0xbd, 1}, {0xcb, 1}, {0xd9, 1},
	} {
		sw := b.newSwitch(r.root, r.numa)
		b.mlx5(sw.port(r.root+3), mlx5{
			rdma: fmt.Sprintf("mlx5_%d", i), id: connectX7(true), hca: cx7HCA(), ib: true,
			rate: "400 Gb/sec (4X NDR)", speed: 400000, mtu: 4092, lid: lid + i, vector: 32,
		})
		m.GPUs = append(m.GPUs, b.gpu(sw.port(r.root+6), gpu))
	}
}

func dgxCmdline() string {
	return "console=tty0 console=ttyS1,115200n8 intel_iommu=on iommu=pt nouveau.modeset=0 rd.driver.blacklist=nouveau"
}

func i40eModules() []module { return []module{{name: "i40e", size: 565248}} }

// gpu adds an NVIDIA GPU with its one MSI interrupt and device node, and
// returns the NVML side of it.
func (b *builder) gpu(parent *pciDev, id pciID) nvmlfake.GPU {
	link, degraded := b.faults.gpuLink[b.gpus]
	if degraded {
		id.curGen, id.curWidth = link[0], link[1]
	}
	d := b.endpoint(parent, 0, id)
	d.irqs(false, "nvidia")
	b.t.file(fmt.Sprintf("/dev/nvidia%d", b.gpus), "")
	b.gpuDevs = append(b.gpuDevs, d)
	g := nvmlfake.GPU{PCIBusID: d.bdf, NUMANode: d.numa, NVLinkDown: b.faults.nvlinkDown[b.gpus], Throttled: b.faults.throttled[b.gpus]}
	if degraded {
		g.PCIeGen, g.PCIeWidth = link[0], link[1]
	}
	b.gpus++
	return g
}

// platform adds the CPU's first PCIe stack, host bridge 00 on node 0: on
// HGX baseboards the NVSwitches behind their own switch (buses 05 on, as
// real HGX boards show them), then the boot NVMe drive.
func (b *builder) platform(nvswitches int) {
	hb := b.hostBridge(0x00, 0)
	bus := 0x01
	if nvswitches > 0 {
		rp := b.rootPortAt(hb, 0x01, 0x01)
		sw := pcieSwitch{b: b, up: b.bridge(rp, 0x00, 0x02, switchPortID())}
		for i := range nvswitches {
			d := b.endpoint(sw.port(0x05+i), 0, nvswitchID())
			d.irqs(false, "nvidia-nvswitch")
		}
		bus = 0x05 + nvswitches
	}
	nvme := b.endpoint(b.rootPortAt(hb, 0x02, bus), 0, nvmeSSD())
	names := []string{"nvme0q0"}
	for q := 1; q <= 8; q++ {
		names = append(names, fmt.Sprintf("nvme0q%d", q))
	}
	nvme.irqs(true, names...)
}

// x710 adds a dual-port Intel X710 behind root port 01.0 of host bridge
// root; port 0 is cabled at 10GbE, port 1 is not.
func (b *builder) x710(root, numa int) {
	rp := b.rootPort(root, 0x01, root+1, numa)
	for fn := range 2 {
		d := b.endpoint(rp, fn, intelX710())
		name := "en" + slotName(d, true)
		speed := -1
		if fn == 0 {
			speed = 10000
		}
		b.netdev(d, netdev{name: name, mtu: 1500, address: macString(b.mac([3]byte{0x3c, 0xfd, 0xfe}, d.bdf)), speed: speed, up: fn == 0})
		names := []string{"i40e-" + d.bdf + ":misc"}
		for q := range 8 {
			names = append(names, fmt.Sprintf("i40e-%s-TxRx-%d", name, q))
		}
		d.irqs(true, names...)
	}
}

// rootPortAt adds a root port in slot of host bridge hb, with the port
// services' shared interrupt.
func (b *builder) rootPortAt(hb *pciDev, slot, secondary int) *pciDev {
	rp := b.bridge(hb, slot, secondary, rootPortID())
	rp.irqs(false, "PCIe PME, aerdrv")
	return rp
}

// finish writes what depends on the whole machine and reports every
// mistake the description made.
func (b *builder) finish() error {
	b.loopback()
	b.kernelLog()
	b.aerCounters()
	b.finishBuses()
	b.interrupts()
	if b.verbs > 0 {
		b.t.attr("/sys/class/infiniband_verbs/abi_version", "6")
		b.t.file("/dev/infiniband/rdma_cm", "")
	}
	if b.gpus > 0 {
		for _, f := range []string{"nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"} {
			b.t.file("/dev/"+f, "")
		}
	}
	return errors.Join(b.t.errs...)
}
