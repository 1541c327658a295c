package sim

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gpunode/gpunode/gpu/amdgpu"
	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
)

// mi300xRoCE is an 8x MI300X server (the AMD Instinct UBB-8 platform, as in
// Supermicro AS-8125GS or Dell XE9680): every GPU shares a PCIe switch with
// a ConnectX-7 in Ethernet mode (RoCE v2, 400GbE), the eight GPUs form one
// XGMI hive, and the host runs the amdgpu DKMS driver from ROCm 6.4. It has
// no NVIDIA GPU, so the NVML backend finds nothing and the amdgpu sysfs
// backend serves it.
func mi300xRoCE(b *builder) *nvmlfake.Machine {
	// KFD topology: one node per CPU socket first, then the GPUs.
	b.amdHost(rocmVersion, amdgpuDriverVersion)
	roots := amdRoots
	for i, r := range roots {
		sw := b.newSwitch(r.root, r.numa)
		b.mlx5(sw.port(r.root+3), mlx5{
			rdma: fmt.Sprintf("mlx5_%d", i), id: connectX7(false), hca: cx7HCA(),
			rate: "400 Gb/sec (4X NDR)", speed: 400000, mtu: 9000,
			ipv4: [4]byte{10, 1, byte(i), 11}, vector: 32,
		})
		b.amdGPU(sw.port(r.root+5), mi300x, i, len(roots))
	}
	return nil
}

// mi355xRoCE is an 8x MI355X server (the AMD Instinct MI350 UBB-8
// platform): the MI300X node's shape, with MI355X GPUs (CDNA4, 288 GB of
// HBM3E, 1400 W) that report gpu_metrics 1.8, on a host running ROCm 7.0
// and its amdgpu driver.
func mi355xRoCE(b *builder) *nvmlfake.Machine {
	b.amdHost(rocm7Version, amdgpu7DriverVersion)
	for i, r := range amdRoots {
		sw := b.newSwitch(r.root, r.numa)
		b.mlx5(sw.port(r.root+3), mlx5{
			rdma: fmt.Sprintf("mlx5_%d", i), id: connectX7(false), hca: cx7HCA(),
			rate: "400 Gb/sec (4X NDR)", speed: 400000, mtu: 9000,
			ipv4: [4]byte{10, 1, byte(i), 11}, vector: 32,
		})
		b.amdGPU(sw.port(r.root+5), mi355x, i, len(amdRoots))
	}
	return nil
}

// amdRoots are the PCIe root ports of the UBB-8 platforms' eight
// switches, with their NUMA nodes.
var amdRoots = []struct{ root, numa int }{
	{0x10, 0}, {0x20, 0}, {0x40, 0}, {0x60, 0}, {0x80, 1}, {0xa0, 1}, {0xc0, 1}, {0xe0, 1},
}

// amdHost writes what the UBB-8 hosts share: two 96-core sockets, the
// amdgpu modules, driver and ROCm versions, /dev/kfd and the KFD
// topology's CPU nodes.
func (b *builder) amdHost(rocm, driver string) {
	b.system(system{
		sockets: 2, cores: 96, threads: 2,
		memKB:   []uint64{1584917148, 1585141832},
		cmdline: "console=tty0 console=ttyS0,115200n8 amd_iommu=on iommu=pt pci=realloc=off",
		modules: slices.Concat(amdgpuModules(), rdmaModules(false), baseModules()),
	})
	b.platform(0)
	b.t.attr("/sys/module/amdgpu/version", driver)
	b.t.attr("/opt/rocm/.info/version", rocm)
	b.t.file("/dev/kfd", "")
	for n := range 2 {
		b.t.file(fmt.Sprintf("%s/%d/properties", kfdTopology, n), kfdCPUProperties())
	}
}

// amdModel is what the simulated AMD GPUs differ in.
type amdModel struct {
	id                                pciID
	vram                              uint64 // mem_info_vram_total
	productName, productNumber, vbios string
	computeModes, memoryModes         string // available_*_partition
	powerBase, powerSpread, powerCap  float64
	cus                               int // compute units (4 SIMDs each)
	gfxTarget                         uint64
	metricsContent                    uint8 // gpu_metrics 1.x
	xgmiSpeed                         uint64
	sclkLevels, mclkLevels            string
}

var (
	// mi300x is the MI300X as the ROCm 6.4 driver shows it.
	mi300x = amdModel{
		id:   pciID{class: "0x120000", vendor: "0x1002", device: "0x74a1", subVendor: "0x1002", subDevice: "0x74a1", revision: "0x00", driver: "amdgpu", gen: 5, width: 16},
		vram: mi300xVRAM, productName: "AMD Instinct MI300X OAM", productNumber: "102-G30211-00", vbios: "113-M3000100-102",
		computeModes: "SPX, DPX, QPX, CPX", memoryModes: "NPS1, NPS4",
		powerBase: 550, powerSpread: 150, powerCap: 750, cus: 304, gfxTarget: 90402, metricsContent: 5, xgmiSpeed: 32,
		sclkLevels: "0: 500Mhz\n1: 1420Mhz *\n2: 2100Mhz\n", mclkLevels: "0: 900Mhz\n1: 1100Mhz\n2: 1200Mhz\n3: 1300Mhz *\n",
	}
	// mi355x is the MI355X (PCI id 1002:75a3, gfx950: 8 XCDs of 32 CUs,
	// 288 GB of HBM3E, 1400 W) as the ROCm 7.0 driver shows it. Its
	// attribute values are not from a capture: sizes and clocks follow
	// AMD's published specifications (2400 MHz peak engine clock, HBM3E
	// at 8 TB/s: memory clock 2000 MHz).
	mi355x = amdModel{
		id:   pciID{class: "0x120000", vendor: "0x1002", device: "0x75a3", subVendor: "0x1002", subDevice: "0x75a3", revision: "0x00", driver: "amdgpu", gen: 5, width: 16},
		vram: mi355xVRAM, productName: "AMD Instinct MI355X OAM", productNumber: "102-G35501-00", vbios: "113-M3550100-100",
		computeModes: "SPX, DPX, CPX", memoryModes: "NPS1, NPS2",
		powerBase: 900, powerSpread: 300, powerCap: 1400, cus: 256, gfxTarget: 90500, metricsContent: 8, xgmiSpeed: 38,
		sclkLevels: "0: 500Mhz\n1: 2400Mhz *\n", mclkLevels: "0: 900Mhz\n1: 2000Mhz *\n",
	}
)

const (
	amdgpuDriverVersion = "6.10.5"
	rocmVersion         = "6.4.1-120"
	// ROCm 7.0's amdgpu driver (Instinct driver 30.10) and ROCm release,
	// as /sys/module/amdgpu/version and /opt/rocm/.info/version give them.
	amdgpu7DriverVersion = "6.14.14"
	rocm7Version         = "7.0.2-56"
	// mi355xVRAM is 288 GiB of HBM3E; a capture would show what the
	// firmware keeps back.
	mi355xVRAM  = 288 << 30
	kfdTopology = "/sys/class/kfd/kfd/topology/nodes"
	// mi300xVRAM is what mem_info_vram_total reads on an MI300X: 192 GB
	// of HBM3 less what the firmware keeps.
	mi300xVRAM = 206141652992
)

func amdgpuModules() []module {
	return []module{
		{name: "amdgpu", size: 19521536, taint: "OE", extraRefs: 8, deps: []string{"amddrm_ttm_helper", "amdttm", "amdxcp", "drm_buddy", "drm_display_helper", "drm_kms_helper", "drm"}},
		{name: "amddrm_ttm_helper", size: 12288, taint: "OE", deps: []string{"amdttm"}},
		{name: "amdttm", size: 110592, taint: "OE"},
		{name: "amdxcp", size: 12288, taint: "OE"},
		{name: "drm_buddy", size: 20480},
		{name: "drm_display_helper", size: 237568, deps: []string{"drm_kms_helper"}},
		{name: "drm_kms_helper", size: 270336, deps: []string{"drm"}},
		{name: "drm", size: 761856},
	}
}

// amdGPU adds GPU i of n in the hive: its PCI function, DRM card and render
// node, the amdgpu attributes and hwmon sensors, the gpu_metrics table and
// its KFD topology node with an XGMI link to every other GPU.
func (b *builder) amdGPU(parent *pciDev, m amdModel, i, n int) {
	d := b.endpoint(parent, 0, m.id)
	d.irqs(false, "amdgpu")
	t := b.t
	card, render := fmt.Sprintf("card%d", i+1), fmt.Sprintf("renderD%d", 128+i)
	for _, node := range []string{card, render} {
		t.attr(d.dir+"/drm/"+node+"/dev", fmt.Sprintf("226:%d", map[bool]int{true: i + 1, false: 128 + i}[node == card]))
		t.link(d.dir+"/drm/"+node+"/device", d.dir)
		t.link("/sys/class/drm/"+node, d.dir+"/drm/"+node)
		t.file("/dev/dri/"+node, "")
	}
	h := b.hash(d.bdf)
	busy := 35 + int(h%50)
	used := m.vram/4 + h%(m.vram/2)
	for _, a := range [][2]string{
		{"gpu_busy_percent", itoa(busy)},
		{"mem_busy_percent", itoa(busy / 3)},
		{"mem_info_vram_total", fmt.Sprint(m.vram)},
		{"mem_info_vram_used", fmt.Sprint(used)},
		{"mem_info_vis_vram_total", fmt.Sprint(m.vram)},
		{"unique_id", fmt.Sprintf("%016x", h)},
		{"product_name", m.productName},
		{"product_number", m.productNumber},
		{"serial_number", fmt.Sprintf("PCB%09d", h%1e9)},
		{"vbios_version", m.vbios},
		{"current_compute_partition", b.amd.computeMode()},
		{"available_compute_partition", m.computeModes},
		{"current_memory_partition", b.amd.memoryMode()},
		{"available_memory_partition", m.memoryModes},
		{"pcie_replay_count", "0"},
		{"ras/umc_err_count", fmt.Sprintf("ue: 0\nce: %d", h%4)},
	} {
		t.attr(d.dir+"/"+a[0], a[1])
	}
	t.file(d.dir+"/pp_dpm_sclk", m.sclkLevels)
	t.file(d.dir+"/pp_dpm_mclk", m.mclkLevels)
	power := m.powerBase + float64(h%uint64(m.powerSpread)) // W
	temp := 48 + int(h%20)
	hw := fmt.Sprintf("%s/hwmon/hwmon%d", d.dir, i+2) // hwmon0 and 1 are the CPUs'
	for _, a := range [][2]string{
		{"name", "amdgpu"},
		{"power1_input", fmt.Sprint(uint64(power * 1e6))},
		{"power1_cap", fmt.Sprint(uint64(m.powerCap * 1e6))},
		{"power1_cap_max", fmt.Sprint(uint64(m.powerCap * 1e6))},
		{"temp2_label", "junction"},
		{"temp2_input", itoa(temp * 1000)},
		{"temp2_crit", "110000"},
		{"temp3_label", "mem"},
		{"temp3_input", itoa((temp - 8) * 1000)},
		{"temp3_crit", "95000"},
	} {
		t.attr(hw+"/"+a[0], a[1])
	}
	t.link(hw+"/device", d.dir)
	t.link(fmt.Sprintf("/sys/class/hwmon/hwmon%d", i+2), hw)
	t.file(d.dir+"/gpu_metrics", string(amdMetrics(m, b.amd.parts(), h, busy, power, temp)))

	b.kfdGPU(d, m, i, n, h)
}

// kfdGPU writes the KFD topology nodes of GPU i of n: one per compute
// partition (nodes 2 + i*parts .. after the two CPU nodes), together the
// model's compute units of 4 SIMDs on 8 XCCs. io_link 0 is the PCIe link to the
// CPU node; then come XGMI links to the GPU's other partitions, then to
// every partition of every other GPU, as the captured CPX topology in
// gpu/amdgpu/testdata/captures shows. Partition p > 0 has its own
// amdgpu_xcp platform device with a DRM card and render node, numbered
// after the PCI cards', and the kernel ORs p into the node's location_id.
func (b *builder) kfdGPU(d *pciDev, m amdModel, i, n int, h uint64) {
	parts := b.amd.parts()
	var bus, dev, fn int
	fmt.Sscanf(d.bdf, "0000:%x:%x.%x", &bus, &dev, &fn)
	node := func(gpu, p int) int { return 2 + gpu*parts + p }
	for p := range parts {
		render := 128 + i
		if p > 0 {
			x := i*(parts-1) + p - 1
			render = 128 + n + x
			b.xcp(x, 1+n+x, render)
		}
		from := node(i, p)
		kfd := fmt.Sprintf("%s/%d", kfdTopology, from)
		links := 1 + (parts - 1) + (n-1)*parts
		t := b.t
		t.file(kfd+"/properties", kfdGPUProperties(m, bus<<8|dev<<3|fn|p, render, b.hash("xgmi-hive"), h, links, parts))
		t.file(kfd+"/io_links/0/properties", kfdLink(2, from, d.numa, 20))
		l := 1
		link := func(props string) {
			t.file(fmt.Sprintf("%s/io_links/%d/properties", kfd, l), props)
			l++
		}
		for q := range parts {
			if q != p {
				link(kfdLinkBW(amdgpuXGMI, from, node(i, q), 13, 819200, 819200))
			}
		}
		for peer := range n {
			for q := range parts {
				switch {
				case peer == i:
				case parts == 1:
					link(kfdLink(amdgpuXGMI, from, node(peer, q), 15))
				default:
					link(kfdLinkBW(amdgpuXGMI, from, node(peer, q), 41, 0, 0))
				}
			}
		}
	}
}

// xcp adds amdgpu_xcp platform device x, which the driver creates for
// each compute partition after the first: a DRM card and render node of
// no PCI device, which the amdgpu backend skips.
func (b *builder) xcp(x, card, render int) {
	dir := fmt.Sprintf("/sys/devices/platform/amdgpu_xcp.%d", x)
	b.t.attr(dir+"/uevent", "MODALIAS=platform:amdgpu_xcp")
	for _, minor := range []int{card, render} {
		node := fmt.Sprintf("card%d", minor)
		if minor == render {
			node = fmt.Sprintf("renderD%d", minor)
		}
		b.t.attr(dir+"/drm/"+node+"/dev", fmt.Sprintf("226:%d", minor))
		b.t.link(dir+"/drm/"+node+"/device", dir)
		b.t.link("/sys/class/drm/"+node, dir+"/drm/"+node)
		b.t.file("/dev/dri/"+node, "")
	}
}

// amdPartition is the compute and memory partition mode of a node's AMD
// GPUs; the zero value is the default, SPX with NPS1.
type amdPartition struct{ compute, memory string }

func (p amdPartition) computeMode() string { return cmp.Or(p.compute, "SPX") }
func (p amdPartition) memoryMode() string  { return cmp.Or(p.memory, "NPS1") }

// parts is the number of compute partitions of an MI300X (8 XCCs) in the
// mode; 0 for a mode it has not.
func (p amdPartition) parts() int {
	return map[string]int{"SPX": 1, "DPX": 2, "QPX": 4, "CPX": 8}[p.computeMode()]
}

// validMemory lists the memory partition modes the kernel accepts with the
// compute mode on an MI300X, which has NPS1 and NPS4
// (__aqua_vanjaram_get_px_mode_info: SPX only NPS1, DPX NPS1 or NPS2,
// QPX and CPX NPS1 or NPS4).
func (p amdPartition) validMemory() []string {
	switch p.computeMode() {
	case "SPX", "DPX":
		return []string{"NPS1"}
	case "QPX", "CPX":
		return []string{"NPS1", "NPS4"}
	}
	return nil
}

// amdPartitionModes lists the valid combinations, for errors.
func amdPartitionModes() string {
	var out []string
	for _, c := range []string{"SPX", "DPX", "QPX", "CPX"} {
		for _, m := range (amdPartition{compute: c}).validMemory() {
			out = append(out, c+" with "+m)
		}
	}
	return strings.Join(out, ", ")
}

// amdgpuXGMI is the KFD io_link type of XGMI (HSA_IOLINKTYPE_XGMI).
const amdgpuXGMI = 11

func kfdCPUProperties() string {
	return fmt.Sprint("cpu_cores_count 192\nsimd_count 0\nmem_banks_count 1\ncaches_count 0\nio_links_count 0\np2p_links_count 0\n" +
		"cpu_core_id_base 0\nsimd_id_base 0\nmax_waves_per_simd 0\nlds_size_in_kb 0\ngds_size_in_kb 0\nnum_gws 0\nwave_front_size 0\n" +
		"array_count 0\nsimd_arrays_per_engine 0\ncu_per_simd_array 0\nsimd_per_cu 0\nmax_slots_scratch_cu 0\ngfx_target_version 0\n" +
		"vendor_id 0\ndevice_id 0\nlocation_id 0\ndomain 0\ndrm_render_minor 0\nhive_id 0\nnum_sdma_engines 0\nnum_sdma_xgmi_engines 0\n" +
		"num_sdma_queues_per_engine 0\nnum_cp_queues 0\nmax_engine_clk_ccompute 3700\n")
}

// kfdGPUProperties is the properties file of one of parts KFD nodes of a
// GPU of model m with links io_links.
func kfdGPUProperties(m amdModel, location, render int, hive, unique uint64, links, parts int) string {
	var deviceID uint64
	fmt.Sscanf(m.id.device, "0x%x", &deviceID)
	var sb strings.Builder
	for _, kv := range []struct {
		k string
		v uint64
	}{
		{"cpu_cores_count", 0}, {"simd_count", uint64(m.cus * 4 / parts)}, {"mem_banks_count", 1}, {"caches_count", 507},
		{"io_links_count", uint64(links)}, {"p2p_links_count", 0}, {"cpu_core_id_base", 0},
		{"simd_id_base", 2147487744}, {"max_waves_per_simd", 8}, {"lds_size_in_kb", 64}, {"gds_size_in_kb", 0},
		{"num_gws", 64}, {"wave_front_size", 64}, {"array_count", uint64(32 / parts)}, {"simd_arrays_per_engine", 1},
		{"cu_per_simd_array", uint64(m.cus / 32)}, {"simd_per_cu", 4}, {"max_slots_scratch_cu", 32}, {"gfx_target_version", m.gfxTarget},
		{"vendor_id", 4098}, {"device_id", deviceID}, {"location_id", uint64(location)}, {"domain", 0},
		{"drm_render_minor", uint64(render)}, {"hive_id", hive}, {"num_sdma_engines", 2},
		{"num_sdma_xgmi_engines", 14}, {"num_sdma_queues_per_engine", 8}, {"num_cp_queues", 64},
		{"max_engine_clk_fcompute", 2100}, {"local_mem_size", 0}, {"fw_version", 151}, {"capability", 746586752},
		{"debug_prop", 1495}, {"sdma_fw_version", 19}, {"unique_id", unique}, {"num_xcc", uint64(8 / parts)}, {"max_engine_clk_ccompute", 3700},
	} {
		fmt.Fprintf(&sb, "%s %d\n", kv.k, kv.v)
	}
	return sb.String()
}

func kfdLink(typ, from, to, weight int) string {
	return kfdLinkBW(typ, from, to, weight, 312500, 64000)
}

func kfdLinkBW(typ, from, to, weight, minBW, maxBW int) string {
	return fmt.Sprintf("type %d\nversion_major 0\nversion_minor 0\nnode_from %d\nnode_to %d\nweight %d\nmin_latency 0\nmax_latency 0\n"+
		"min_bandwidth %d\nmax_bandwidth %d\nrecommended_transfer_size 0\nrecommended_sdma_engine_id_mask 0\nflags 1\n",
		typ, from, to, weight, minBW, maxBW)
}

// amdMetrics is the card's gpu_metrics table in the model's revision: 1.5
// (MI300 on amdgpu 6.8 and later) or 1.8 (ROCm 7.0's driver). Fields the
// firmware does not fill are all ones, as the kernel leaves them; members
// a revision lacks are skipped.
func amdMetrics(m amdModel, parts int, h uint64, busy int, power float64, temp int) []byte {
	format, content := uint8(1), m.metricsContent
	offsets, size, ok := amdgpu.Layout(format, content)
	if !ok {
		panic(fmt.Sprintf("gpu_metrics %d.%d layout missing", format, content))
	}
	b := make([]byte, size)
	for i := 4; i < size; i++ {
		b[i] = 0xff
	}
	binary.LittleEndian.PutUint16(b, uint16(size))
	b[2], b[3] = format, content
	put := func(name string, width, i int, v uint64) {
		at, ok := offsets[name]
		if !ok {
			return
		}
		off := at + i*width
		switch width {
		case 2:
			binary.LittleEndian.PutUint16(b[off:], uint16(v))
		case 4:
			binary.LittleEndian.PutUint32(b[off:], uint32(v))
		case 8:
			binary.LittleEndian.PutUint64(b[off:], v)
		}
	}
	put("temperature_hotspot", 2, 0, uint64(temp))
	put("temperature_mem", 2, 0, uint64(temp-8))
	put("temperature_vrsoc", 2, 0, uint64(temp-6))
	put("curr_socket_power", 2, 0, uint64(power))
	put("average_gfx_activity", 2, 0, uint64(busy))
	put("average_umc_activity", 2, 0, uint64(busy/3))
	put("energy_accumulator", 8, 0, (h%1e6)*65536*1000) // about 10 days at 600 W
	put("system_clock_counter", 8, 0, 1_700_000_000_000_000_000+h%1e12)
	put("throttle_status", 4, 0, 0)
	put("gfxclk_lock_status", 4, 0, 0)
	put("pcie_link_width", 2, 0, 16)
	put("pcie_link_speed", 2, 0, 320)
	put("xgmi_link_width", 2, 0, 16)
	put("xgmi_link_speed", 2, 0, m.xgmiSpeed)
	put("gfx_activity_acc", 4, 0, h%1e9)
	put("mem_activity_acc", 4, 0, h%1e8)
	put("pcie_bandwidth_acc", 8, 0, h%1e7)
	put("pcie_bandwidth_inst", 8, 0, 12)
	put("pcie_l0_to_recov_count_acc", 8, 0, 3)
	put("pcie_replay_count_acc", 8, 0, 0)
	put("pcie_replay_rover_count_acc", 8, 0, 0)
	put("pcie_nak_sent_count_acc", 4, 0, 0)
	put("pcie_nak_rcvd_count_acc", 4, 0, 0)
	for l := range amdgpu.NumXGMILinks {
		// Seven links to peers carry traffic; the eighth is unused.
		if l < 7 {
			put("xgmi_read_data_acc", 8, l, (h>>l)%1e12)
			put("xgmi_write_data_acc", 8, l, (h>>(l+1))%1e12)
		} else {
			put("xgmi_read_data_acc", 8, l, 0)
			put("xgmi_write_data_acc", 8, l, 0)
		}
	}
	for l := range amdgpu.NumXGMILinks {
		// 1.7 on: the seven peer links are up, the eighth is not wired.
		put("xgmi_link_status", 2, l, map[bool]uint64{true: 1, false: 0}[l < 7])
	}
	put("mem_max_bandwidth", 8, 0, 8000)
	put("accumulation_counter", 4, 0, h%1e6)
	for _, r := range []string{"prochot_residency_acc", "ppt_residency_acc", "socket_thm_residency_acc", "vr_thm_residency_acc", "hbm_thm_residency_acc"} {
		put(r, 4, 0, 0)
	}
	put("num_partition", 2, 0, uint64(parts))
	put("pcie_lc_perf_other_end_recovery", 4, 0, 0)
	put("firmware_timestamp", 8, 0, 170_000_000_000_000_000+h%1e9)
	gfxclk, uclk := uint64(1420), uint64(1300)
	if m.metricsContent >= 8 {
		gfxclk, uclk = 2400, 2000
	}
	for x := range 8 {
		put("current_gfxclk", 2, x, gfxclk)
	}
	for x := range 4 {
		put("current_socclk", 2, x, 1000)
		put("current_vclk0", 2, x, 29)
		put("current_dclk0", 2, x, 22)
	}
	put("current_uclk", 2, 0, uclk)
	put("padding", 2, 0, 0)
	return b
}

// gpuMetricsFile is one card's gpu_metrics table that Traffic advances:
// the energy accumulator at the card's power, and the XGMI data counters
// of its peer links at a steady all-to-all load.
type gpuMetricsFile struct {
	path    string
	base    []byte
	offsets map[string]int
	// perSecond is the growth of each 64-bit counter by member name and
	// element.
	perSecond map[counterKey]float64
	// ticks is the growth of 32-bit tick counters per second, from an
	// elapsed time on: the SMU's accumulation counter from the start, a
	// throttler's residency from when ThrottleAMD began it.
	ticks map[string]tickGrowth
	// last is the elapsed time last written: tables never go back.
	last float64
}

// tickGrowth counts from elapsed time from until to (0: on and on).
type tickGrowth struct{ perSecond, from, to float64 }

// smuTicksPerSecond is how fast the simulated SMU's accumulation counter
// counts; a throttler that holds all the time has a residency that rises
// as fast.
const smuTicksPerSecond = 1000

// counterKey names one element of a gpu_metrics array member.
type counterKey struct {
	name string
	i    int
}

// XGMI load per peer link: 24 GB/s read, 22 GB/s written, in the
// table's kilobytes (1024 bytes).
const xgmiReadKBps, xgmiWriteKBps = 24e9 / 1024, 22e9 / 1024

// addGPUMetrics finds the amdgpu cards' gpu_metrics tables under root.
func (t *Traffic) addGPUMetrics() error {
	cards, err := filepath.Glob(filepath.Join(t.root, "sys/class/drm/card*/device/gpu_metrics"))
	if err != nil {
		return err
	}
	slices.Sort(cards)
	for _, p := range cards {
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if len(raw) < 4 {
			return fmt.Errorf("%s: too short", p)
		}
		offsets, size, ok := amdgpu.Layout(raw[2], raw[3])
		if !ok || len(raw) != size {
			return fmt.Errorf("%s: gpu_metrics %d.%d not supported", p, raw[2], raw[3])
		}
		m, err := amdgpu.ParseMetrics(raw)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		f := gpuMetricsFile{path: p, base: raw, offsets: offsets, perSecond: map[counterKey]float64{}, ticks: map[string]tickGrowth{}}
		if m.AccumulationCounter != nil {
			f.ticks["accumulation_counter"] = tickGrowth{perSecond: smuTicksPerSecond}
		}
		if m.SocketPowerW != nil {
			f.perSecond[counterKey{"energy_accumulator", 0}] = *m.SocketPowerW * 65536
		}
		for l := range len(m.XGMIReadKB) {
			if m.XGMIReadKB[l] != 0 { // links that carry nothing stay idle
				f.perSecond[counterKey{"xgmi_read_data_acc", l}] = xgmiReadKBps
				f.perSecond[counterKey{"xgmi_write_data_acc", l}] = xgmiWriteKBps
			}
		}
		t.metrics = append(t.metrics, f)
	}
	return nil
}

// render returns the table elapsed seconds after the start.
func (f gpuMetricsFile) render(elapsed float64) []byte {
	b := slices.Clone(f.base)
	for k, rate := range f.perSecond {
		off := f.offsets[k.name] + 8*k.i
		v := binary.LittleEndian.Uint64(b[off:])
		binary.LittleEndian.PutUint64(b[off:], v+uint64(rate*elapsed))
	}
	for name, g := range f.ticks {
		end := elapsed
		if g.to > 0 {
			end = min(end, g.to)
		}
		if end > g.from {
			off := f.offsets[name]
			v := binary.LittleEndian.Uint32(b[off:])
			binary.LittleEndian.PutUint32(b[off:], v+uint32(g.perSecond*(end-g.from)))
		}
	}
	// The driver's timestamp moves too (ns).
	if off, ok := f.offsets["system_clock_counter"]; ok {
		v := binary.LittleEndian.Uint64(b[off:])
		binary.LittleEndian.PutUint64(b[off:], v+uint64(elapsed*1e9))
	}
	return b
}

// advanceGPUMetrics rewrites every table to its state at elapsed seconds.
func (t *Traffic) advanceGPUMetrics(elapsed float64) error {
	var errs []error
	for i := range t.metrics {
		f := &t.metrics[i]
		if elapsed <= f.last {
			continue
		}
		if err := t.writeBytes(f.path, f.render(elapsed)); err != nil {
			errs = append(errs, err)
			continue
		}
		f.last = elapsed
	}
	return errors.Join(errs...)
}

// ThrottleAMD makes a throttler hold on a card (its DRM name, "card6")
// from one time until another (zero: on and on), as an overheating HBM
// stack or a failing VR does: its residency in gpu_metrics
// ("hbm_thm_residency_acc", "socket_thm_residency_acc", ...) rises with
// the accumulation counter meanwhile. The card's table must have the
// residency (gpu_metrics 1.6 and later).
func (t *Traffic) ThrottleAMD(card, residency string, from, to time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.metrics {
		f := &t.metrics[i]
		if !strings.Contains(f.path, "/"+card+"/") {
			continue
		}
		if _, ok := f.offsets[residency]; !ok || !strings.HasSuffix(residency, "_residency_acc") {
			return fmt.Errorf("%s: gpu_metrics has no throttler residency %q", card, residency)
		}
		g := tickGrowth{perSecond: smuTicksPerSecond, from: from.Sub(t.start).Seconds()}
		if !to.IsZero() {
			g.to = to.Sub(t.start).Seconds()
		}
		f.ticks[residency] = g
		return nil
	}
	return fmt.Errorf("no gpu_metrics for %s", card)
}

// XGMIRate is the per-second growth of link l's read counter of the card
// whose gpu_metrics is under device, in bytes, for tests; ok is false for a
// link that carries nothing.
func (t *Traffic) XGMIRate(card string, link int) (float64, bool) {
	for _, f := range t.metrics {
		if strings.Contains(f.path, "/"+card+"/") {
			r, ok := f.perSecond[counterKey{"xgmi_read_data_acc", link}]
			return r * 1024, ok
		}
	}
	return 0, false
}
