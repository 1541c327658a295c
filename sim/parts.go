package sim

import (
	"fmt"
	"strings"
)

// The PCI functions the nodes are built from. Ids are the parts' real ones.

// rootPortID is a Sapphire/Emerald Rapids PCIe root port.
func rootPortID() pciID {
	return pciID{class: "0x060400", vendor: "0x8086", device: "0x352a", subVendor: "0x8086", subDevice: "0x0000", revision: "0x04", driver: "pcieport", gen: 5, width: 16}
}

// switchPortID is a port of a Broadcom PEX890xx Gen5 PCIe switch.
func switchPortID() pciID {
	return pciID{class: "0x060400", vendor: "0x1000", device: "0xc030", subVendor: "0x1000", subDevice: "0x100b", revision: "0xb0", driver: "pcieport", gen: 5, width: 16}
}

func h100SXM() pciID {
	return pciID{class: "0x030200", vendor: "0x10de", device: "0x2330", subVendor: "0x10de", subDevice: "0x16c1", revision: "0xa1", driver: "nvidia", gen: 5, width: 16}
}

func b200SXM() pciID {
	return pciID{class: "0x030200", vendor: "0x10de", device: "0x2901", subVendor: "0x10de", subDevice: "0x1999", revision: "0xa1", driver: "nvidia", gen: 5, width: 16}
}

// nvswitchID is the H100-generation NVSwitch as the baseboard exposes it
// for management: a bridge-class NVIDIA function.
func nvswitchID() pciID {
	return pciID{class: "0x068000", vendor: "0x10de", device: "0x22a3", subVendor: "0x10de", subDevice: "0x1796", revision: "0xa1", driver: "nvidia-nvswitch", gen: 4, width: 2}
}

// connectX7 in InfiniBand or Ethernet mode (the port type changes the class).
func connectX7(ib bool) pciID {
	class := "0x020000"
	if ib {
		class = "0x020700"
	}
	return pciID{class: class, vendor: "0x15b3", device: "0x1021", subVendor: "0x15b3", subDevice: "0x0041", revision: "0x00", driver: "mlx5_core", gen: 5, width: 16}
}

func blueField3() pciID {
	return pciID{class: "0x020000", vendor: "0x15b3", device: "0xa2dc", subVendor: "0x15b3", subDevice: "0x0009", revision: "0x01", driver: "mlx5_core", gen: 5, width: 16}
}

func connectX6Dx() pciID {
	return pciID{class: "0x020000", vendor: "0x15b3", device: "0x101d", subVendor: "0x15b3", subDevice: "0x0016", revision: "0x00", driver: "mlx5_core", gen: 4, width: 16}
}

func intelX710() pciID {
	return pciID{class: "0x020000", vendor: "0x8086", device: "0x1572", subVendor: "0x8086", subDevice: "0x0007", revision: "0x02", driver: "i40e", gen: 3, width: 8}
}

func nvmeSSD() pciID {
	return pciID{class: "0x010802", vendor: "0x144d", device: "0xa824", subVendor: "0x144d", subDevice: "0xa801", revision: "0x00", driver: "nvme", gen: 4, width: 4}
}

// hca is what an RDMA device reports about the adapter.
type hca struct {
	hcaType, fw, boardID string
}

func cx7HCA() hca   { return hca{"MT4129", "28.39.1002", "MT_0000000838"} }
func bf3HCA() hca   { return hca{"MT41692", "32.39.1002", "MT_0000000884"} }
func cx6dxHCA() hca { return hca{"MT4125", "22.39.1002", "MT_0000000359"} }

// module is a loaded kernel module.
type module struct {
	name string
	size int
	// deps are the modules this one uses; /proc/modules lists the reverse
	// ("used by").
	deps []string
	// refs beyond the users (open files, held references).
	extraRefs int
	// taint flags as /proc/modules prints them: P proprietary, O out of
	// tree, E unsigned.
	taint string
}

// baseModules are loaded on every node at boot.
func baseModules() []module {
	return []module{
		{name: "overlay", size: 212992, extraRefs: 12},
		{name: "br_netfilter", size: 32768, deps: []string{"bridge"}},
		{name: "bridge", size: 421888, deps: []string{"stp", "llc"}},
		{name: "stp", size: 12288, deps: []string{"llc"}},
		{name: "llc", size: 16384},
		{name: "intel_rapl_msr", size: 20480, deps: []string{"intel_rapl_common"}},
		{name: "intel_rapl_common", size: 40960},
		{name: "ipmi_ssif", size: 45056, deps: []string{"ipmi_msghandler"}},
		{name: "ipmi_si", size: 86016, deps: []string{"ipmi_msghandler"}},
		{name: "ipmi_devintf", size: 16384, deps: []string{"ipmi_msghandler"}, extraRefs: 1},
		{name: "ipmi_msghandler", size: 86016},
		{name: "nvme", size: 61440, extraRefs: 4, deps: []string{"nvme_core"}},
		{name: "nvme_core", size: 212992, deps: []string{"nvme_auth"}, extraRefs: 3},
		{name: "nvme_auth", size: 28672},
		{name: "aesni_intel", size: 356352, deps: []string{"crypto_simd", "cryptd"}},
		{name: "crypto_simd", size: 16384, deps: []string{"cryptd"}},
		{name: "cryptd", size: 28672},
		{name: "ip_tables", size: 32768, deps: []string{"x_tables"}},
		{name: "x_tables", size: 65536},
		{name: "autofs4", size: 57344, extraRefs: 2},
	}
}

// rdmaModules are mlx5 and the RDMA core; ipoib adds IP over InfiniBand.
func rdmaModules(ipoib bool) []module {
	m := []module{
		{name: "rdma_ucm", size: 57344, deps: []string{"rdma_cm", "ib_uverbs", "ib_core"}},
		{name: "rdma_cm", size: 147456, deps: []string{"iw_cm", "ib_cm", "ib_core"}},
		{name: "iw_cm", size: 61440, deps: []string{"ib_core"}},
		{name: "ib_cm", size: 143360, deps: []string{"ib_core"}},
		{name: "ib_umad", size: 45056, deps: []string{"ib_core"}},
		{name: "mlx5_ib", size: 499712, deps: []string{"ib_uverbs", "ib_core", "mlx5_core"}},
		{name: "ib_uverbs", size: 196608, deps: []string{"ib_core"}, extraRefs: 2},
		{name: "ib_core", size: 495616},
		{name: "mlx5_core", size: 2437120, deps: []string{"mlxfw", "psample", "tls", "pci_hyperv_intf"}},
		{name: "mlxfw", size: 36864},
		{name: "psample", size: 20480},
		{name: "tls", size: 155648},
		{name: "pci_hyperv_intf", size: 12288},
	}
	if ipoib {
		m = append([]module{{name: "ib_ipoib", size: 159744, deps: []string{"ib_cm", "ib_core"}}}, m...)
	}
	return m
}

// nvidiaModules are the NVIDIA driver's modules. The open modules carry a
// GPL-compatible licence, so only the proprietary nvidia and
// nvidia_modeset taint the kernel with P.
func nvidiaModules(open, peermem bool) []module {
	prop := "POE"
	nvidiaSize := 56811520
	if open {
		prop, nvidiaSize = "OE", 11911168
	}
	var m []module
	if peermem {
		m = append(m, module{name: "nvidia_peermem", size: 16384, deps: []string{"nvidia", "ib_core"}, taint: "OE"})
	}
	return append(m,
		module{name: "nvidia_uvm", size: 4956160, taint: "OE", deps: []string{"nvidia"}},
		module{name: "nvidia_drm", size: 122880, taint: "OE", deps: []string{"nvidia_modeset", "drm_kms_helper", "drm"}},
		module{name: "nvidia_modeset", size: 1556480, taint: prop, deps: []string{"nvidia"}, extraRefs: 1},
		module{name: "nvidia", size: nvidiaSize, taint: prop, extraRefs: 42},
		module{name: "drm_kms_helper", size: 270336, deps: []string{"drm"}},
		module{name: "drm", size: 761856},
	)
}

// modulesFile formats /proc/modules: name, size, reference count, users
// ("-" when none, else comma-terminated), state, address, taint flags.
func (b *builder) modulesFile(mods []module) string {
	users := make(map[string][]string, len(mods))
	position := make(map[string]int, len(mods))
	for i, m := range mods {
		if _, ok := position[m.name]; ok {
			b.t.fail(fmt.Errorf("module %s listed twice", m.name))
		}
		position[m.name] = i
	}
	for i, m := range mods { // newest first, as the kernel lists users
		for _, d := range m.deps {
			// A module's dependencies were loaded before it: later in the file.
			if p, ok := position[d]; !ok || p < i {
				b.t.fail(fmt.Errorf("module %s needs %s, which is not loaded before it", m.name, d))
			}
			users[d] = append(users[d], m.name)
		}
	}
	// The oldest module sits lowest in the module area.
	addr := make([]uint64, len(mods))
	next := uint64(0xffffffffc0000000)
	for i := len(mods) - 1; i >= 0; i-- {
		addr[i] = next
		next += uint64((mods[i].size + 4095) &^ 4095)
	}
	var sb strings.Builder
	for i, m := range mods {
		u := "-"
		if len(users[m.name]) > 0 {
			u = strings.Join(users[m.name], ",") + ","
		}
		fmt.Fprintf(&sb, "%s %d %d %s Live 0x%016x", m.name, m.size, len(users[m.name])+m.extraRefs, u, addr[i])
		if m.taint != "" {
			fmt.Fprintf(&sb, " (%s)", m.taint)
		}
		sb.WriteByte('\n')
	}
	return sb.String()
}
