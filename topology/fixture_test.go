package topology

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/internal/hostfs"
)

// tree is a host root built file by file in a test.
type tree struct {
	t    *testing.T
	root string
}

func newTree(t *testing.T) *tree {
	t.Helper()
	return &tree{t: t, root: t.TempDir()}
}

func (tr *tree) file(path, content string) {
	tr.t.Helper()
	full := filepath.Join(tr.root, path)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr *tree) dir(path string) {
	tr.t.Helper()
	if err := os.MkdirAll(filepath.Join(tr.root, path), 0o755); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr *tree) link(target, path string) {
	tr.t.Helper()
	full := filepath.Join(tr.root, path)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.Symlink(target, full); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr *tree) remove(path string) {
	tr.t.Helper()
	if err := os.RemoveAll(filepath.Join(tr.root, path)); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr *tree) fs() hostfs.FS {
	tr.t.Helper()
	f, err := hostfs.New(tr.root)
	if err != nil {
		tr.t.Fatal(err)
	}
	return f
}

// pciDev is a PCI function in a fixture. Empty strings leave the attribute
// out, as sysfs does for attributes a device or kernel lacks.
type pciDev struct {
	// path below /sys/devices, from the host bridge to the device:
	// "pci0000:15/0000:15:01.0/0000:16:00.0/0000:17:00.0/0000:18:00.0".
	path                  string
	class, vendor, device string
	driver                string
	numa, localCPUs       string
	speed, maxSpeed       string
	width, maxWidth       string
	irqs                  []int
	physfn                string // the PF's address, for SR-IOV VFs
}

func (d pciDev) addr() string { return d.path[strings.LastIndexByte(d.path, '/')+1:] }

// pci lays a device out as the kernel does: its directory under
// /sys/devices/pci..., a relative symlink from /sys/bus/pci/devices, a
// driver link into /sys/bus/pci/drivers and msi_irqs entries.
func (tr *tree) pci(d pciDev) {
	tr.t.Helper()
	dir := "/sys/devices/" + d.path
	tr.dir(dir)
	for name, v := range map[string]string{
		"class": d.class, "vendor": d.vendor, "device": d.device, "numa_node": d.numa, "local_cpulist": d.localCPUs,
		"current_link_speed": d.speed, "max_link_speed": d.maxSpeed, "current_link_width": d.width, "max_link_width": d.maxWidth,
	} {
		if v != "" {
			tr.file(dir+"/"+name, v+"\n")
		}
	}
	depth := strings.Count(dir, "/") // "/sys/devices/a/b" -> up 4 to the root
	up := strings.Repeat("../", depth-1)
	if d.driver != "" {
		tr.dir("/sys/bus/pci/drivers/" + d.driver)
		tr.link(up+"bus/pci/drivers/"+d.driver, dir+"/driver")
	}
	if d.physfn != "" {
		tr.link("../"+d.physfn, dir+"/physfn")
	}
	for _, irq := range d.irqs {
		tr.file(fmt.Sprintf("%s/msi_irqs/%d", dir, irq), "msix\n")
	}
	tr.link("../../../devices/"+d.path, "/sys/bus/pci/devices/"+d.addr())
}

// bridge adds a root port or switch port (class 0x060400), which the scan
// sees and skips.
func (tr *tree) bridge(path string) {
	tr.pci(pciDev{path: path, class: "0x060400", vendor: "0x1000", device: "0xc030", driver: "pcieport", numa: "0", speed: "32.0 GT/s PCIe", maxSpeed: "32.0 GT/s PCIe", width: "16", maxWidth: "16"})
}

// Devices of the DGX-like fixture.
const (
	sw0      = "pci0000:15/0000:15:01.0/0000:16:00.0" // switch upstream port
	addrGPU0 = "0000:18:00.0"
	addrNIC0 = "0000:19:00.0"
	addrVF   = "0000:19:00.2"
	addrNVSw = "0000:1c:00.0"
	addrGPU1 = "0000:9b:00.0"
	addrEth  = "0000:00:1f.6"
)

const dgxInterrupts = `            CPU0       CPU1       CPU2       CPU3       CPU4       CPU5       CPU6       CPU7       
   0:         46          0          0          0          0          0          0          0   IO-APIC   2-edge      timer
 100:         10          0          0          0          0          0          0          0  IR-PCI-MSIX-0000:19:00.0    0-edge      mlx5_async0@pci:0000:19:00.0
 101:          0         20          0          0          0          0          0          0  IR-PCI-MSIX-0000:19:00.0    1-edge      mlx5_comp0@pci:0000:19:00.0
 150:          0          0          0          0          5          0          0          0  IR-PCI-MSI-0000:18:00.0    0-edge      nvidia
 NMI:          0          0          0          0          0          0          0          0   Non-maskable interrupts
 LOC:     123456     654321         12         34          1          2          3          4   Local timer interrupts
 ERR:          0
 MIS:          0
`

// dgxTree builds a small two-socket GPU node: 8 CPUs on 2 NUMA nodes; on
// node 0 an H100 and a ConnectX-7 (with one VF) behind one PCIe switch and
// an NVSwitch behind a second-level switch; on node 1 an AMD GPU directly
// on a root port; on the chipset an Intel GPU (ignored), an onboard NIC on
// an old kernel (no numa_node, no local_cpulist, no link files, unbound)
// and the host bridge (ignored).
func dgxTree(t *testing.T) *tree {
	tr := newTree(t)
	tr.file("/proc/sys/kernel/osrelease", "6.1.0-28-amd64\n")
	tr.file("/proc/sys/kernel/hostname", "dgx-h100-01\n")
	tr.file("/proc/cmdline", "BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=UUID=1234 ro isolcpus=managed_irq,domain,2-3,6 nohz_full=2-3,6 quiet\n")
	tr.file("/proc/modules", `nvidia_peermem 16384 0 - Live 0xffffffffc0b5f000 (POE)
nvidia 54140928 96 nvidia_peermem, Live 0xffffffffc1000000 (POE)
mlx5_core 2097152 1 mlx5_ib, Live 0xffffffffc0a00000
mlx5_ib 458752 0 - Live 0xffffffffc0980000
`)
	tr.file("/proc/driver/nvidia/version", "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.15  Release Build  (dvs-builder@U16-I3-B03-4-3)  Tue Mar  5 22:15:33 UTC 2024\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
	tr.file("/proc/meminfo", "MemTotal:       16777216 kB\nMemFree:         1234 kB\n")
	tr.file("/sys/devices/system/cpu/online", "0-7\n")
	tr.file("/sys/devices/system/node/online", "0-1\n")
	tr.file("/sys/devices/system/node/possible", "0-1\n")
	tr.file("/sys/devices/system/node/node0/cpulist", "0-3\n")
	tr.file("/sys/devices/system/node/node0/meminfo", "Node 0 MemTotal:        8388608 kB\nNode 0 MemFree:  1 kB\n")
	tr.file("/sys/devices/system/node/node0/distance", "10 21\n")
	tr.file("/sys/devices/system/node/node1/cpulist", "4-7\n")
	tr.file("/sys/devices/system/node/node1/meminfo", "Node 1 MemTotal:        8388608 kB\nNode 1 MemFree:  1 kB\n")
	tr.file("/sys/devices/system/node/node1/distance", "21 10\n")
	tr.file("/proc/interrupts", dgxInterrupts)
	for irq, cpus := range map[int]string{0: "0-7", 100: "0-3", 101: "1", 150: "4-7"} {
		tr.file(fmt.Sprintf("/proc/irq/%d/smp_affinity_list", irq), cpus+"\n")
	}

	// Host bridge pci0000:15, NUMA node 0.
	tr.bridge("pci0000:15/0000:15:01.0")
	tr.bridge(sw0)
	tr.bridge(sw0 + "/0000:17:00.0")
	tr.bridge(sw0 + "/0000:17:01.0")
	tr.bridge(sw0 + "/0000:17:02.0")
	tr.bridge(sw0 + "/0000:17:02.0/0000:1a:00.0")
	tr.bridge(sw0 + "/0000:17:02.0/0000:1a:00.0/0000:1b:00.0")
	tr.pci(pciDev{path: sw0 + "/0000:17:00.0/" + addrGPU0, class: "0x030200", vendor: "0x10de", device: "0x2330", driver: "nvidia",
		numa: "0", localCPUs: "0-3", speed: "32.0 GT/s PCIe", maxSpeed: "32.0 GT/s PCIe", width: "16", maxWidth: "16", irqs: []int{150}})
	tr.pci(pciDev{path: sw0 + "/0000:17:01.0/" + addrNIC0, class: "0x020700", vendor: "0x15b3", device: "0x1021", driver: "mlx5_core",
		numa: "0", localCPUs: "0-3", speed: "32.0 GT/s PCIe", maxSpeed: "32.0 GT/s PCIe", width: "16", maxWidth: "16", irqs: []int{101, 100}})
	tr.pci(pciDev{path: sw0 + "/0000:17:01.0/" + addrVF, class: "0x020700", vendor: "0x15b3", device: "0x101e", driver: "mlx5_core",
		numa: "0", localCPUs: "0-3", speed: "Unknown", maxSpeed: "Unknown", width: "0", maxWidth: "0", physfn: addrNIC0})
	tr.pci(pciDev{path: sw0 + "/0000:17:02.0/0000:1a:00.0/0000:1b:00.0/" + addrNVSw, class: "0x068000", vendor: "0x10de", device: "0x22a3",
		numa: "0", localCPUs: "0-3", speed: "16.0 GT/s PCIe", maxSpeed: "16.0 GT/s PCIe", width: "2", maxWidth: "2"})

	// Host bridge pci0000:9a, NUMA node 1, kernel older than 4.19 (speeds
	// without "PCIe").
	tr.bridge("pci0000:9a/0000:9a:01.0")
	tr.pci(pciDev{path: "pci0000:9a/0000:9a:01.0/" + addrGPU1, class: "0x030000", vendor: "0x1002", device: "0x740f", driver: "amdgpu",
		numa: "1", localCPUs: "4-7", speed: "8 GT/s", maxSpeed: "16 GT/s", width: "8", maxWidth: "16"})

	// The chipset.
	tr.pci(pciDev{path: "pci0000:00/0000:00:00.0", class: "0x060000", vendor: "0x8086", device: "0x09a2", numa: "-1"})
	tr.pci(pciDev{path: "pci0000:00/0000:00:02.0", class: "0x030000", vendor: "0x8086", device: "0x4680", driver: "i915", numa: "-1", irqs: []int{0}})
	tr.pci(pciDev{path: "pci0000:00/" + addrEth, class: "0x020000", vendor: "0x8086", device: "0x15fa"})
	return tr
}
