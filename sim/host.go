package sim

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/gpunode/gpunode/internal/cpuset"
)

// kernelRelease is the kernel every simulated node runs (Ubuntu 24.04 HWE).
const kernelRelease = "6.8.0-49-generic"

// builder turns a node description into a tree. Descriptions call its
// methods (system, the PCI helpers, mlx5, gpu); finish writes what depends
// on the whole machine (interrupts, bus ranges).
type builder struct {
	t    *tree
	name string
	// runtime are the faults the node's ports go through at run time.
	runtime []PortFault
	// online CPUs, the CPUs of each NUMA node, and how many 32-bit words a
	// CPU mask has (the kernel prints nr_cpu_ids bits).
	online cpuset.Set
	nodes  []cpuset.Set
	words  int
	// pci lists every device and bridge in the order described; host
	// bridges are in it too (hostBridge set).
	pci []*pciDev
	// buses records the bus numbers taken, to catch descriptions that use
	// one twice.
	buses   map[int]string
	ifindex int
	verbs   int // uverbs devices so far
	gpus    int // NVIDIA GPUs so far
	// faults are planted by the degraded node variants; zero on good nodes.
	faults faults
	// amd is the partition mode of the AMD GPUs; zero is SPX with NPS1.
	amd amdPartition
	// pfc is the DCB PFC mask of each Ethernet mlx5 netdev.
	pfc map[string]uint8
	// effective is the next CPU (index into each node's CPUs) the vector
	// allocator hands an interrupt of that node.
	effective []int
	// gpuDevs and hcas are the NVIDIA GPUs in index order and the mlx5
	// functions by RDMA device name, for the kernel log.
	gpuDevs []*pciDev
	hcas    map[string]logHCA
}

// logHCA is an mlx5 function as the kernel log names it.
type logHCA struct {
	dev *pciDev
	fw  string
	id  pciID
}

func newBuilder(name string) *builder {
	return &builder{t: newTree(), name: name, buses: make(map[int]string), ifindex: 1}
}

// system is what a node description says about the machine outside PCI.
type system struct {
	// sockets x cores x threads CPUs, numbered the way x86 firmware does:
	// first thread of every core of socket 0, then socket 1, ..., then the
	// second threads in the same order. One NUMA node per socket.
	sockets, cores, threads int
	// memKB is the memory of each NUMA node in kB.
	memKB   []uint64
	cmdline string
	// modules are the loaded kernel modules, most recently loaded first
	// (the order of /proc/modules).
	modules []module
	// nvidia is the loaded NVIDIA kernel driver; nil when none.
	nvidia *nvidiaDriver
	// daemons are the long-running processes beyond systemd and the
	// container runtime (tuning looks for irqbalance among them).
	daemons []string
	// arch is the kernel's machine name, "x86_64" when empty; Grace
	// nodes say "aarch64".
	arch string
}

// system writes CPUs, NUMA nodes, memory and the kernel's files.
func (b *builder) system(s system) {
	if len(s.memKB) != s.sockets {
		b.t.fail(fmt.Errorf("%d sockets but memory for %d nodes", s.sockets, len(s.memKB)))
		return
	}
	total := s.sockets * s.cores * s.threads
	b.words = (total + 31) / 32
	var all []int
	for n := range s.sockets {
		var cpus []int
		for th := range s.threads {
			base := th*s.sockets*s.cores + n*s.cores
			for c := range s.cores {
				cpus = append(cpus, base+c)
			}
		}
		b.nodes = append(b.nodes, cpuset.Of(cpus...))
		all = append(all, cpus...)
	}
	b.online = cpuset.Of(all...)
	b.effective = make([]int, len(b.nodes))

	t := b.t
	for _, f := range []string{"online", "possible", "present"} {
		t.attr("/sys/devices/system/cpu/"+f, b.online.String())
	}
	t.attr("/sys/devices/system/cpu/kernel_max", "8191")
	// Both read empty-ish when nothing is isolated; nohz_full prints
	// "(null)" on kernels built with NO_HZ_FULL (Ubuntu's are).
	t.attr("/sys/devices/system/cpu/isolated", "")
	t.attr("/sys/devices/system/cpu/nohz_full", "(null)")

	nodeList := cpuset.Of(seq(len(b.nodes))...).String()
	for _, f := range []string{"online", "possible", "has_cpu", "has_memory", "has_normal_memory"} {
		t.attr("/sys/devices/system/node/"+f, nodeList)
	}
	var memTotal uint64
	for n, cpus := range b.nodes {
		dir := fmt.Sprintf("/sys/devices/system/node/node%d", n)
		t.attr(dir+"/cpulist", cpus.String())
		t.attr(dir+"/cpumap", cpus.Mask(b.words))
		t.file(dir+"/meminfo", nodeMeminfo(n, s.memKB[n]))
		dist := make([]string, len(b.nodes))
		for m := range b.nodes {
			dist[m] = "21"
			if m == n {
				dist[m] = "10"
			}
		}
		t.attr(dir+"/distance", strings.Join(dist, " "))
		memTotal += s.memKB[n]
	}
	t.file("/proc/meminfo", meminfo(memTotal))

	t.attr("/proc/sys/kernel/osrelease", kernelRelease)
	t.attr("/proc/sys/kernel/hostname", b.name)
	arch, builder := cmp.Or(s.arch, "x86_64"), "lcy02-amd64-103"
	if arch == "aarch64" {
		builder = "bos02-arm64-063"
	}
	t.attr("/proc/version", "Linux version "+kernelRelease+" (buildd@"+builder+") ("+arch+"-linux-gnu-gcc-13 (Ubuntu 13.2.0-23ubuntu4) 13.2.0, GNU ld (GNU Binutils for Ubuntu) 2.42) #49-Ubuntu SMP PREEMPT_DYNAMIC Mon Nov  4 02:06:24 UTC 2024")
	t.attr("/proc/cmdline", fmt.Sprintf("BOOT_IMAGE=/boot/vmlinuz-%s root=UUID=%s ro %s", kernelRelease, b.uuid("rootfs"), s.cmdline))
	t.file("/proc/modules", b.modulesFile(s.modules))
	b.sysctls()
	b.processes(s.daemons)
	if d := s.nvidia; d != nil {
		t.file("/proc/driver/nvidia/version", d.versionFile(arch))
		t.attr("/sys/module/nvidia/version", d.version)
	}
}

// sysctls writes the tuning-relevant settings with the kernel's stock
// defaults. kernel/sched_migration_cost_ns is absent on purpose: it moved to
// debugfs in 5.13.
func (b *builder) sysctls() {
	for _, s := range [][2]string{
		{"net/core/rmem_max", "212992"},
		{"net/core/wmem_max", "212992"},
		{"net/core/rmem_default", "212992"},
		{"net/core/wmem_default", "212992"},
		{"net/core/netdev_max_backlog", "1000"},
		{"net/core/somaxconn", "4096"},
		{"net/ipv4/tcp_rmem", "4096\t131072\t6291456"},
		{"net/ipv4/tcp_wmem", "4096\t16384\t4194304"},
		{"net/ipv4/tcp_congestion_control", "cubic"},
		{"net/ipv4/tcp_available_congestion_control", "reno cubic bbr"},
		{"net/ipv4/tcp_mtu_probing", "0"},
		{"vm/swappiness", "60"},
		{"vm/dirty_ratio", "20"},
		{"vm/dirty_background_ratio", "10"},
		{"vm/zone_reclaim_mode", "0"},
		{"kernel/numa_balancing", "1"},
	} {
		b.t.attr("/proc/sys/"+s[0], s[1])
	}
	b.t.attr("/sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never")
	b.t.attr("/sys/kernel/mm/transparent_hugepage/defrag", "always defer defer+madvise [madvise] never")
}

// processes writes /proc/<pid>/comm and cmdline for PID 1, a kernel
// thread and the node's daemons, and the boot id, which tuning's journal
// is tied to.
func (b *builder) processes(daemons []string) {
	b.t.attr("/proc/sys/kernel/random/boot_id", b.uuid("boot"))
	procs := [][2]string{
		{"systemd", "/sbin/init\x00splash\x00"},
		{"kthreadd", ""},
		{"systemd-journal", "/usr/lib/systemd/systemd-journald\x00"},
		{"containerd", "/usr/bin/containerd\x00"},
		{"kubelet", "/usr/bin/kubelet\x00--config=/var/lib/kubelet/config.yaml\x00"},
	}
	for _, d := range daemons {
		procs = append(procs, [2]string{d, "/usr/sbin/" + d + "\x00--foreground\x00"})
	}
	// PIDs as a booted server shows them: init, kthreadd, early services,
	// then the daemons.
	pids := []int{1, 2, 412, 1187, 1530}
	for i, p := range procs {
		pid := 1800 + 53*i
		if i < len(pids) {
			pid = pids[i]
		}
		dir := fmt.Sprintf("/proc/%d", pid)
		b.t.attr(dir+"/comm", p[0])
		b.t.file(dir+"/cmdline", p[1])
	}
}

// nodeMeminfo is /sys/devices/system/node/nodeN/meminfo for a mostly idle
// node of totalKB.
func nodeMeminfo(node int, totalKB uint64) string {
	free := totalKB / 100 * 97
	var sb strings.Builder
	for _, f := range []struct {
		name string
		kb   uint64
	}{
		{"MemTotal:", totalKB},
		{"MemFree:", free},
		{"MemUsed:", totalKB - free},
		{"SwapCached:", 0},
		{"Active:", totalKB / 200},
		{"Inactive:", totalKB / 150},
		{"Active(anon):", totalKB / 700},
		{"Inactive(anon):", totalKB / 5000},
		{"Active(file):", totalKB/200 - totalKB/700},
		{"Inactive(file):", totalKB/150 - totalKB/5000},
		{"Unevictable:", 30720},
		{"Mlocked:", 30720},
		{"Dirty:", 132},
		{"Writeback:", 0},
		{"FilePages:", totalKB / 90},
		{"Mapped:", totalKB / 2000},
		{"AnonPages:", totalKB / 800},
		{"Shmem:", 21504},
		{"KernelStack:", 31248},
		{"PageTables:", 14172},
		{"SecPageTables:", 0},
		{"NFS_Unstable:", 0},
		{"Bounce:", 0},
		{"WritebackTmp:", 0},
		{"KReclaimable:", totalKB / 400},
		{"Slab:", totalKB / 250},
		{"SReclaimable:", totalKB / 400},
		{"SUnreclaim:", totalKB/250 - totalKB/400},
		{"AnonHugePages:", 0},
		{"ShmemHugePages:", 0},
		{"ShmemPmdMapped:", 0},
		{"FileHugePages:", 0},
		{"FilePmdMapped:", 0},
		{"Unaccepted:", 0},
	} {
		fmt.Fprintf(&sb, "Node %d %-15s %8d kB\n", node, f.name, f.kb)
	}
	// The huge page lines are counts, printed without a unit.
	for _, name := range []string{"HugePages_Total:", "HugePages_Free:", "HugePages_Surp:"} {
		fmt.Fprintf(&sb, "Node %d %-16s%5d\n", node, name, 0)
	}
	return sb.String()
}

// meminfo is /proc/meminfo for a machine of totalKB.
func meminfo(totalKB uint64) string {
	free := totalKB / 100 * 97
	var sb strings.Builder
	for _, f := range []struct {
		name string
		kb   uint64
	}{
		{"MemTotal:", totalKB},
		{"MemFree:", free},
		{"MemAvailable:", totalKB / 100 * 98},
		{"Buffers:", 1077364},
		{"Cached:", totalKB / 90},
		{"SwapCached:", 0},
		{"Active:", totalKB / 200},
		{"Inactive:", totalKB / 150},
		{"Unevictable:", 61440},
		{"Mlocked:", 61440},
		{"SwapTotal:", 8388604},
		{"SwapFree:", 8388604},
		{"Dirty:", 264},
		{"Writeback:", 0},
		{"AnonPages:", totalKB / 800},
		{"Mapped:", totalKB / 2000},
		{"Shmem:", 43008},
		{"KReclaimable:", totalKB / 400},
		{"Slab:", totalKB / 250},
		{"SReclaimable:", totalKB / 400},
		{"SUnreclaim:", totalKB/250 - totalKB/400},
		{"KernelStack:", 62496},
		{"PageTables:", 28344},
		{"CommitLimit:", totalKB/2 + 8388604},
		{"Committed_AS:", totalKB / 300},
		{"VmallocTotal:", 34359738367},
		{"VmallocUsed:", 1123456},
		{"VmallocChunk:", 0},
		{"Percpu:", 452608},
		{"HardwareCorrupted:", 0},
		{"AnonHugePages:", 0},
	} {
		fmt.Fprintf(&sb, "%-16s%8d kB\n", f.name, f.kb)
	}
	for _, name := range []string{"HugePages_Total:", "HugePages_Free:", "HugePages_Rsvd:", "HugePages_Surp:"} {
		fmt.Fprintf(&sb, "%-16s%8d\n", name, 0)
	}
	fmt.Fprintf(&sb, "%-16s%8d kB\n%-16s%8d kB\n", "Hugepagesize:", 2048, "Hugetlb:", 0)
	return sb.String()
}

// nvidiaDriver is the loaded NVIDIA kernel driver.
type nvidiaDriver struct {
	version string // "550.54.15"
	open    bool   // the open GPU kernel modules
	built   string // build date as the version file prints it
}

// versionFile is /proc/driver/nvidia/version on a kernel for arch. The
// open and the proprietary modules word the first line differently; "Open
// Kernel Module" is how a reader tells them apart.
func (d nvidiaDriver) versionFile(arch string) string {
	first := fmt.Sprintf("NVRM version: NVIDIA UNIX %s Kernel Module  %s  %s", arch, d.version, d.built)
	if d.open {
		first = fmt.Sprintf("NVRM version: NVIDIA UNIX Open Kernel Module for %s  %s  Release Build  (dvs-builder@U16-I3-B03-4-3)  %s", arch, d.version, d.built)
	}
	return first + "\nGCC version:  gcc version 13.2.0 (Ubuntu 13.2.0-23ubuntu4) \n"
}

// hash is a stable 64-bit hash of the node name and key, the source of
// every "random looking" value (MACs, GUIDs, counters) so that two builds
// are byte-for-byte equal and two nodes differ.
func (b *builder) hash(key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(b.name))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return h.Sum64()
}

// uuid is a stable UUID-formatted string for key.
func (b *builder) uuid(key string) string {
	x, y := b.hash(key), b.hash(key+"#")
	// Version 4, RFC 4122 variant, like the random UUIDs installers write.
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", x>>32, (x>>16)&0xffff, x&0x0fff|0x4000, y>>48&0x3fff|0x8000, y&0xffffffffffff)
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

func itoa(n int) string { return strconv.Itoa(n) }
