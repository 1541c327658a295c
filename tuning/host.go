package tuning

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/gpunode/gpunode/internal/cpuset"
	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/topology"
)

// Machine is what the IRQ policies need from topology discovery: CPUs,
// NUMA nodes, the GPUs and NICs and their interrupts.
type Machine struct {
	Kernel       string
	OnlineCPUs   cpuset.Set
	IsolatedCPUs cpuset.Set
	NohzFullCPUs cpuset.Set
	NUMANodes    []topology.NUMANode
	PCIDevices   []topology.PCIDevice
	IRQs         []topology.IRQ
	// TopologyError is set when topology discovery failed; IRQ policies
	// then report errors instead of guessing.
	TopologyError string
}

// MachineFrom takes a Machine from a topology discovery result.
func MachineFrom(t topology.Topology, err error) Machine {
	m := Machine{
		Kernel: t.Kernel, OnlineCPUs: t.OnlineCPUs, IsolatedCPUs: t.IsolatedCPUs, NohzFullCPUs: t.NohzFullCPUs,
		NUMANodes: t.NUMANodes, PCIDevices: t.PCIDevices, IRQs: t.IRQs,
	}
	if err != nil && (t.OnlineCPUs.IsEmpty() || len(t.NUMANodes) == 0) {
		m.TopologyError = err.Error()
	}
	return m
}

// Current is the observed state of one setting.
type Current struct {
	// Value is normalized: sysctl values with single spaces, the selected
	// THP mode, IRQ affinity as a canonical cpulist, a unit's ActiveState.
	Value string `json:"value"`
	// Unsupported means the kernel has no such setting.
	Unsupported bool `json:"unsupported,omitempty"`
	// Err says why the value could not be read.
	Err string `json:"error,omitempty"`
	// Unmovable says why user space cannot set this interrupt's affinity
	// (the kernel manages it); "" for anything else.
	Unmovable string `json:"unmovable,omitempty"`
}

// Device is a GPU or NIC an IRQ policy may select.
type Device struct {
	PCIAddress      string           `json:"pci_address"`
	Kind            topology.PCIKind `json:"kind"`
	Driver          string           `json:"driver,omitempty"`
	NUMANode        int              `json:"numa_node"`
	LocalCPUs       cpuset.Set       `json:"local_cpus"`
	VirtualFunction bool             `json:"virtual_function,omitempty"`
	Netdevs         []Netdev         `json:"netdevs,omitempty"`
	// RDMA names the device's RDMA devices (mlx5_0).
	RDMA []string    `json:"rdma,omitempty"`
	IRQs []DeviceIRQ `json:"irqs,omitempty"`
}

// Netdev is a network interface of a device.
type Netdev struct {
	Name string `json:"name"`
	// SpeedMbps is -1 when the link is down or the driver does not say.
	SpeedMbps int `json:"speed_mbps"`
}

// DeviceIRQ is one interrupt of a device.
type DeviceIRQ struct {
	Number int    `json:"number"`
	Name   string `json:"name,omitempty"`
	// Key names the interrupt by device and queue (see irqKey): the
	// journal's key, which a driver reload that renumbers keeps.
	Key string `json:"key"`
}

// Host is everything a plan is computed from. Read fills it; Plan is a
// pure function of it, the profile and the journal.
type Host struct {
	Kernel string `json:"kernel"`
	BootID string `json:"boot_id,omitempty"`
	// Current holds the settings the profile or the journal names.
	Current map[ID]Current `json:"-"`
	Devices []Device       `json:"devices,omitempty"`
	// IRQNumbers maps the key of every interrupt of Devices to its number.
	IRQNumbers map[string]int `json:"-"`
	// NodeCPUs are the CPUs of each NUMA node.
	NodeCPUs     map[int]cpuset.Set `json:"-"`
	OnlineCPUs   cpuset.Set         `json:"online_cpus"`
	IsolatedCPUs cpuset.Set         `json:"isolated_cpus"`
	NohzFullCPUs cpuset.Set         `json:"nohz_full_cpus"`
	// PodCPUs are the CPUs the kubelet gave exclusively to containers
	// (static CPU manager); PartitionCPUs those of cgroup v2 isolated
	// partitions. Neither receives device interrupts.
	PodCPUs       cpuset.Set `json:"pod_cpus"`
	PartitionCPUs cpuset.Set `json:"partition_cpus"`
	// CPUWarnings say which of them could not be read.
	CPUWarnings   []string   `json:"cpu_warnings,omitempty"`
	TopologyError string     `json:"topology_error,omitempty"`
	IRQBalance    IRQBalance `json:"irqbalance"`
	NetNS         NetNS      `json:"network_namespace"`
	// IPCNS and UTSNS are checked only when a setting of that namespace is
	// named (zero otherwise).
	IPCNS NetNS `json:"ipc_namespace,omitzero"`
	UTSNS NetNS `json:"uts_namespace,omitzero"`
	// MemoryTiers is the number of memory tiers
	// (/sys/devices/virtual/memory_tiering/memory_tier*, Linux 6.1+): 1 on
	// a DRAM-only node; 0 when unknown. Read only for numa.balancing 2 or 3.
	MemoryTiers int `json:"memory_tiers,omitempty"`
	// CPUFreq is what the cpufreq driver offers on the CPUs of the cpu
	// section.
	CPUFreq map[int]CPUFreqCaps `json:"cpufreq,omitempty"`
	// NICNetdevs are the netdevs the nic section selects; NICMax the
	// drivers' largest ring sizes.
	NICNetdevs []string      `json:"nic_netdevs,omitempty"`
	NICMax     map[ID]string `json:"-"`
	// CanHoldLatency is true in the daemon, which holds a CPU latency
	// limit for as long as it runs.
	CanHoldLatency bool `json:"can_hold_latency,omitempty"`
	// CongestionControl says which TCP congestion control algorithms the
	// kernel offers or can load.
	CongestionControl CongestionControl `json:"congestion_control"`
	// RoCE holds the RoCE ports, read for a profile's roce section.
	RoCE roceHost `json:"roce,omitzero"`
}

// CongestionControl is what the kernel offers for
// net.ipv4.tcp_congestion_control.
type CongestionControl struct {
	// Available is net.ipv4.tcp_available_congestion_control (built in or loaded).
	Available []string `json:"available,omitempty"`
	// Modules are the tcp_* congestion control modules of the running
	// kernel (from modules.dep), which the kernel loads on demand; nil when
	// /lib/modules is not readable (then a write is simply attempted).
	Modules []string `json:"modules,omitempty"`
}

// readValue reads and normalizes one setting.
func readValue(fsys hostfs.FS, id ID) Current {
	path, err := id.hostPath()
	if err != nil {
		return Current{Err: err.Error()}
	}
	return readAt(fsys, id, path)
}

// readAt reads and normalizes one setting from its file.
func readAt(fsys hostfs.FS, id ID, path string) Current {
	s, err := fsys.ReadString(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Current{Unsupported: true}
	}
	if err != nil {
		return Current{Err: fmt.Sprintf("read %s: %v", path, unwrapPath(err))}
	}
	v, err := normalize(id, s)
	if err != nil {
		return Current{Err: fmt.Sprintf("%s: %v", path, err)}
	}
	return Current{Value: v}
}

// normalize turns file content into the form plans compare.
func normalize(id ID, s string) (string, error) {
	switch id.Kind {
	case KindTHP:
		return ParseBracketed(s)
	case KindIRQ:
		set, err := cpuset.Parse(s)
		if err != nil {
			return "", err
		}
		return set.String(), nil
	}
	return NormalizeValue(s), nil
}

func unwrapPath(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}

// Read observes what the plan needs: the current value of every setting
// the profile or the journal names, the devices the IRQ policies choose
// from, irqbalance and the network namespace. Problems with single
// settings are recorded in them; the error is for a cancelled context.
func (t *Tuner) Read(ctx context.Context, p Profile, m Machine, j *Journal) (Host, error) {
	h := Host{
		Kernel:        m.Kernel,
		Current:       map[ID]Current{},
		NodeCPUs:      map[int]cpuset.Set{},
		OnlineCPUs:    m.OnlineCPUs,
		IsolatedCPUs:  m.IsolatedCPUs,
		NohzFullCPUs:  m.NohzFullCPUs,
		TopologyError: m.TopologyError,
	}
	if h.Kernel == "" {
		h.Kernel, _ = t.FS.ReadString("/proc/sys/kernel/osrelease")
	}
	h.BootID = readBootID(t.FS)
	for _, n := range m.NUMANodes {
		h.NodeCPUs[n.ID] = n.CPUs
	}
	var ids []ID
	for key := range p.Sysctl {
		ids = append(ids, ID{KindSysctl, key})
	}
	if p.NUMA.Balancing != nil {
		ids = append(ids, ID{KindNUMA, NUMABalancingKey})
	}
	if p.NUMA.TransparentHugepages != "" {
		ids = append(ids, ID{KindTHP, THPKey})
	}
	if p.NUMA.TransparentHugepageDefrag != "" {
		ids = append(ids, ID{KindTHP, THPDefragKey})
	}
	if p.CPU.MaxLatencyUs != nil {
		ids = append(ids, ID{KindPMQoS, CPULatencyKey})
	}
	ids = append(ids, t.readCPUPower(p, &h)...)
	if p.NIC.any() {
		h.NICNetdevs = nicNetdevs(t.FS, p.NIC)
		for _, n := range h.NICNetdevs {
			for _, w := range p.NIC.wants() {
				ids = append(ids, ID{KindNIC, nicKey(n, w[0])})
			}
		}
	}
	journalIRQs := false
	if j != nil {
		for _, e := range j.Entries {
			if e.Kind != KindService {
				ids = append(ids, e.ID())
			}
			journalIRQs = journalIRQs || e.Kind == KindIRQ
		}
	}
	for _, id := range ids {
		if pid, ok := pairPartner(id); ok {
			ids = append(ids, pid)
		}
	}
	if len(p.IRQ.Policies) > 0 || journalIRQs {
		if len(p.IRQ.Policies) == 0 && m.OnlineCPUs.IsEmpty() && m.TopologyError == "" {
			// Revert is given no topology; the journal's interrupts are
			// found by device and queue, so discover them.
			topo, err := topology.Discover(ctx, t.FS)
			m = MachineFrom(topo, err)
			h.TopologyError = m.TopologyError
		}
		h.Devices = readDevices(t.FS, m)
		if len(p.IRQ.Policies) > 0 {
			h.PodCPUs, h.PartitionCPUs, h.CPUWarnings = readWorkloadCPUs(t.FS)
		}
		h.IRQNumbers = map[string]int{}
		for _, d := range h.Devices {
			for _, irq := range d.IRQs {
				h.IRQNumbers[irq.Key] = irq.Number
				if len(p.IRQ.Policies) > 0 {
					ids = append(ids, ID{KindIRQ, irq.Key})
				}
			}
		}
	}
	ids = append(ids, t.readRoCE(ctx, p, j, &h)...)
	var nicIDs []ID
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return h, err
		}
		if _, done := h.Current[id]; done {
			continue
		}
		if id.Kind == KindNIC {
			if !slices.Contains(nicIDs, id) {
				nicIDs = append(nicIDs, id)
			}
			continue
		}
		if id.Kind == KindPMQoS {
			h.Current[id] = t.readLatency()
			continue
		}
		if id.Kind != KindIRQ {
			h.Current[id] = readValue(t.FS, id)
			continue
		}
		n, err := h.irqNumber(id)
		switch {
		case err != nil:
			h.Current[id] = Current{Err: err.Error()}
		case n < 0:
			h.Current[id] = Current{Unsupported: true} // gone with its device
		default:
			h.Current[id] = t.readIRQ(id, n)
		}
	}
	t.readNIC(nicIDs, &h)
	if b := p.NUMA.Balancing; b != nil && (*b == 2 || *b == 3) {
		h.MemoryTiers = readMemoryTiers(t.FS)
	}
	if _, ok := p.Sysctl["net.ipv4.tcp_congestion_control"]; ok {
		h.CongestionControl = readCongestionControl(t.FS, h.Kernel)
	}
	banID := ID{KindIRQBalance, BannedIRQsKey}
	needUnit := len(p.IRQ.Policies) > 0 || (j != nil && (j.has(ID{KindService, IRQBalanceUnit}) || j.has(banID)))
	if needUnit {
		h.IRQBalance = t.irqbalance(ctx)
		h.Current[ID{KindService, IRQBalanceUnit}] = Current{Value: h.IRQBalance.Unit}
	}
	if (len(p.IRQ.Policies) > 0 && p.IRQ.IRQBalance == IRQBalanceCoexist) || j.has(banID) {
		h.Current[banID] = t.readBanned(ctx, h.IRQBalance)
	}
	if t.NetNS != nil {
		h.NetNS = t.NetNS()
	} else {
		h.NetNS = CheckNetNS(t.FS)
	}
	for _, id := range ids {
		ns := h.namespace(id.namespace())
		if ns == nil || ns.State != "" {
			continue
		}
		if t.Namespace != nil {
			*ns = t.Namespace(id.namespace())
		} else {
			*ns = CheckNamespace(t.FS, id.namespace())
		}
	}
	return h, ctx.Err()
}

// readMemoryTiers counts the memory tiers the kernel formed (one per
// class of memory: DRAM, CXL, PMEM); 0 when the kernel does not say.
func readMemoryTiers(fsys hostfs.FS) int {
	names, err := fsys.Names("/sys/devices/virtual/memory_tiering")
	if err != nil {
		return 0
	}
	n := 0
	for _, name := range names {
		if strings.HasPrefix(name, "memory_tier") {
			n++
		}
	}
	return n
}

// namespace returns the IPC or UTS namespace field of h, nil for others.
func (h *Host) namespace(kind string) *NetNS {
	switch kind {
	case NSIPC:
		return &h.IPCNS
	case NSUTS:
		return &h.UTSNS
	}
	return nil
}

// nsOf is the namespace state a setting is judged by; ok is false for
// settings outside any namespace. An unchecked namespace is unknown.
func (h Host) nsOf(id ID) (NetNS, bool) {
	switch kind := id.namespace(); kind {
	case "":
		return NetNS{}, false
	case NSNet:
		return h.NetNS, true
	default:
		n := *h.namespace(kind)
		if n.State == "" {
			n = NetNS{State: NetNSUnknown, Detail: "not checked"}
		}
		return n, true
	}
}

// irqNumber is the number the interrupt id names has now: -1 when it is
// gone (its device or driver removed), an error when the interrupts could
// not be discovered. Keys of older journals are the number itself.
func (h Host) irqNumber(id ID) (int, error) {
	if n, ok := legacyIRQKey(id.Key); ok {
		return n, nil
	}
	if n, ok := h.IRQNumbers[id.Key]; ok {
		return n, nil
	}
	if h.TopologyError != "" {
		return 0, fmt.Errorf("irq %s cannot be found: topology discovery failed: %s", id.Key, h.TopologyError)
	}
	return -1, nil
}

// readIRQ reads an interrupt's affinity; one the kernel does not let user
// space move says so.
func (t *Tuner) readIRQ(id ID, n int) Current {
	cur := readAt(t.FS, id, irqAffinityPath(n))
	if cur.Unsupported || cur.Err != "" {
		return cur
	}
	switch {
	case irqAffinityReadOnly(t.FS, n):
		cur.Unmovable = fmt.Sprintf("the kernel manages this interrupt's affinity (/proc/irq/%d/smp_affinity is read-only)", n)
	default:
		cur.Unmovable = t.Unmovable.reason(id, n)
	}
	return cur
}

// readBootID returns the kernel's boot id, "" when unreadable (fixture
// trees may lack it).
func readBootID(fsys hostfs.FS) string {
	s, err := fsys.ReadString("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return s
}

// readDevices lists the GPUs and NICs with their interrupts, netdevs and
// RDMA devices.
func readDevices(fsys hostfs.FS, m Machine) []Device {
	irqs := map[string][]DeviceIRQ{}
	for _, irq := range m.IRQs {
		if irq.PCIAddress != "" {
			irqs[irq.PCIAddress] = append(irqs[irq.PCIAddress], DeviceIRQ{Number: irq.Number, Name: irq.Name})
		}
	}
	var out []Device
	for _, p := range m.PCIDevices {
		if p.Kind != topology.KindNIC && p.Kind != topology.KindGPU {
			continue
		}
		d := Device{
			PCIAddress: p.Address, Kind: p.Kind, Driver: p.Driver, NUMANode: p.NUMANode,
			LocalCPUs: p.LocalCPUs, VirtualFunction: p.VirtualFunction, IRQs: irqs[p.Address],
		}
		slices.SortFunc(d.IRQs, func(a, b DeviceIRQ) int { return a.Number - b.Number })
		setIRQKeys(d.PCIAddress, d.IRQs)
		base := "/sys/bus/pci/devices/" + p.Address
		if p.Kind == topology.KindNIC {
			d.Netdevs = readNetdevs(fsys, base)
			d.RDMA, _ = fsys.Names(base + "/infiniband")
		}
		out = append(out, d)
	}
	return out
}

// readNetdevs lists a NIC's network interfaces: under <dev>/net, or for
// virtio NICs one level down, under <dev>/virtioN/net. A device without a
// bound driver has none.
func readNetdevs(fsys hostfs.FS, base string) []Netdev {
	dirs := []string{base + "/net"}
	children, _ := fsys.Names(base)
	for _, c := range children {
		if strings.HasPrefix(c, "virtio") {
			dirs = append(dirs, base+"/"+c+"/net")
		}
	}
	var out []Netdev
	for _, dir := range dirs {
		names, _ := fsys.Names(dir)
		for _, n := range names {
			out = append(out, Netdev{Name: n, SpeedMbps: readSpeed(fsys, dir+"/"+n+"/speed")})
		}
	}
	return out
}

// readSpeed reads a netdev's link speed in Mb/s; the kernel fails the read
// with EINVAL when the link is down, and prints -1 when the driver does not
// know.
func readSpeed(fsys hostfs.FS, path string) int {
	n, err := fsys.ReadInt(path)
	if err != nil || n < 0 || n > 1<<31 {
		return -1
	}
	return int(n)
}

// readCongestionControl reads the available algorithms and the loadable
// tcp_* modules of the running kernel.
func readCongestionControl(fsys hostfs.FS, kernel string) CongestionControl {
	var cc CongestionControl
	if v, err := ReadSysctl(fsys, "net.ipv4.tcp_available_congestion_control"); err == nil {
		cc.Available = strings.Fields(v)
	}
	if kernel == "" || strings.ContainsAny(kernel, "/\x00") {
		return cc
	}
	dir := "/lib/modules/" + kernel
	dep, err := fsys.ReadString(dir + "/modules.dep")
	if err != nil {
		return cc
	}
	builtin, _ := fsys.ReadString(dir + "/modules.builtin")
	cc.Modules = []string{}
	for _, text := range []string{dep, builtin} {
		for line := range strings.Lines(text) {
			path, _, _ := strings.Cut(line, ":")
			path = strings.TrimSpace(path)
			if !strings.Contains(path, "/net/ipv4/tcp_") {
				continue
			}
			base := path[strings.LastIndexByte(path, '/')+1:]
			name, _, _ := strings.Cut(base, ".ko")
			cc.Modules = append(cc.Modules, name)
		}
	}
	slices.Sort(cc.Modules)
	cc.Modules = slices.Compact(cc.Modules)
	return cc
}
