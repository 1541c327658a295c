// Package report renders snapshots for people (inspect's tables, the
// daemon's start-up summary) and for programs (JSON).
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/labels"
	"github.com/gpunode/gpunode/snapshot"
	"github.com/gpunode/gpunode/topology"
)

// JSON writes the snapshot as indented JSON.
func JSON(w io.Writer, s *snapshot.Snapshot) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}

// Labels writes sorted key=value lines.
func Labels(w io.Writer, l labels.Set) error {
	for _, line := range l.Lines() {
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	return nil
}

// Summary is a few lines saying what the node has, plainly, including
// "none found" and why.
func Summary(s *snapshot.Snapshot) []string {
	var out []string
	if s.Simulated != "" {
		out = append(out, fmt.Sprintf("SIMULATED node %q (nothing below is this machine's hardware)", s.Simulated))
	}
	out = append(out, fmt.Sprintf("host %s: kernel %s, %d CPUs online, %d NUMA nodes",
		orDash(s.Host.Hostname), orDash(s.Host.Kernel), s.Host.OnlineCPUs.Len(), len(s.NUMANodes)))
	out = append(out, gpuLine(s))
	if d := s.GPUDriver; d != nil && d.Library != nil {
		out = append(out, fmt.Sprintf("GPU library: %s %s (%s)", d.Backend, d.Library.Path, foundText(d.Backend, d.Library.Found)))
	}
	out = append(out, rdmaLine(s))
	if len(s.GPUs) > 0 {
		out = append(out, "GPUDirect RDMA: "+gpuDirectText(s.GPUDirect))
		if c, reason := labels.Clique(s.GPUs); c != "" {
			out = append(out, "NVLink clique: "+c)
		} else if slices.ContainsFunc(s.GPUs, func(g snapshot.GPU) bool { return g.Fabric != nil && g.Fabric.Clique != "" }) {
			out = append(out, "NVLink clique: none ("+reason+")")
		}
	}
	if x := s.Host.IMEX; x != nil {
		out = append(out, "IMEX: "+imexText(x))
	}
	for _, st := range s.Sources {
		if st.State == source.Error {
			out = append(out, fmt.Sprintf("source %s FAILED: %s", st.Name, st.Message))
		}
	}
	for i := range out { // a multi-line error stays on its line
		out[i] = oneLine(out[i])
	}
	return out
}

// notVisibleText names the GPUs the agent may not open, "" when none.
func notVisibleText(s *snapshot.Snapshot) string {
	if s.GPUDriver == nil || len(s.GPUDriver.GPUsNotVisible) == 0 {
		return ""
	}
	idx := make([]string, len(s.GPUDriver.GPUsNotVisible))
	for i, n := range s.GPUDriver.GPUsNotVisible {
		idx[i] = strconv.Itoa(n)
	}
	return fmt.Sprintf("%d not visible to the agent (index %s: no permission to open them, e.g. a device cgroup; not judged)",
		len(idx), strings.Join(idx, ", "))
}

func gpuLine(s *snapshot.Snapshot) string {
	if len(s.GPUs) == 0 {
		if nv := notVisibleText(s); nv != "" {
			return "GPUs: " + nv
		}
		if why := s.GPUsNotInventoried(); why != "" {
			return "GPUs: " + why // the failed source's line below says why and what to do
		}
		return "GPUs: none found (" + absentReasons(s, source.GPUBackends()...) + ")"
	}
	counts := map[string]int{}
	var names []string
	for _, g := range s.GPUs {
		name := g.Product
		if name == "" { // the driver names none and the device id is not in our tables
			name = "GPU of unknown product (PCI device " + orDash(g.PCIDeviceID) + ")"
		}
		if counts[name] == 0 {
			names = append(names, name)
		}
		counts[name]++
	}
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%dx %s", counts[n], n))
	}
	line := "GPUs: " + strings.Join(parts, ", ")
	if d := s.GPUDriver; d != nil {
		if d.ROCmVersion != "" {
			line += fmt.Sprintf(" (%s, driver %s, ROCm %s)", d.Backend, orDash(d.DriverVersion), d.ROCmVersion)
		} else {
			line += fmt.Sprintf(" (%s, driver %s, CUDA %s)", d.Backend, orDash(d.DriverVersion), orDash(d.CUDAVersion))
		}
	}
	if nv := notVisibleText(s); nv != "" {
		line += "; " + nv
	}
	return line
}

// foundText says in words how a backend's library was found.
func foundText(backend, found string) string {
	key := "gpu.nvml"
	if backend != source.NVML {
		key = "gpu.amd"
	}
	switch found {
	case gpu.FoundConfigured:
		return "configured: " + key + ".libraryPath"
	case gpu.FoundDriverRoot:
		return "under " + key + ".driverRoot"
	case gpu.FoundRuntime:
		return "by name: injected by the container runtime or on the loader's path"
	case gpu.FoundWellKnown:
		return "well-known driver location under the host root"
	}
	return found
}

func rdmaLine(s *snapshot.Snapshot) string {
	if len(s.RDMADevices) == 0 {
		return "RDMA: none found (" + absentReasons(s, source.RDMA) + ")"
	}
	ports, active := 0, 0
	rates := map[string]int{}
	for _, d := range s.RDMADevices {
		for _, p := range d.Ports {
			ports++
			if p.Active() {
				active++
				rates[fmt.Sprintf("%s %s Gb/s", p.Transport, formatFloat(p.RateGbps))]++
			}
		}
	}
	var kinds []string
	for _, k := range slices.Sorted(maps.Keys(rates)) {
		kinds = append(kinds, fmt.Sprintf("%dx %s", rates[k], k))
	}
	line := fmt.Sprintf("RDMA: %d devices, %d of %d ports active", len(s.RDMADevices), active, ports)
	if len(kinds) > 0 {
		line += " (" + strings.Join(kinds, ", ") + ")"
	}
	return line
}

// absentReasons explains an empty section from the status of the sources
// that would have filled it.
func absentReasons(s *snapshot.Snapshot, names ...string) string {
	var why []string
	for _, n := range names {
		if st, ok := s.Source(n); ok {
			msg := st.Message
			if msg == "" {
				msg = "nothing found"
			}
			why = append(why, fmt.Sprintf("%s %s: %s", n, st.State, msg))
		}
	}
	if len(why) == 0 {
		return "no source ran"
	}
	return strings.Join(why, "; ")
}

func gpuDirectText(g snapshot.GPUDirect) string {
	if g.Possible {
		return "possible (" + g.Reason + ")"
	}
	return "not possible (" + g.Reason + ")"
}

// Text writes the human report: tables of sources, GPUs, RDMA ports, NUMA
// nodes, GPU-NIC affinity, settings and labels.
func Text(w io.Writer, s *snapshot.Snapshot, l labels.Set) error {
	p := &printer{w: w}
	for _, line := range Summary(s) {
		p.line(line)
	}
	p.sources(s)
	p.gpus(s)
	p.rdmaPorts(s)
	p.numaNodes(s)
	p.affinity(s)
	p.settings(s)
	if probs := problems(s); len(probs) > 0 {
		p.section("Problems")
		for _, pr := range probs {
			p.line("  " + oneLine(pr))
		}
	}
	p.section("Labels")
	if len(l) == 0 {
		p.line("  (none)")
	}
	for _, line := range l.Lines() {
		p.line("  " + line)
	}
	return p.err
}

func (p *printer) sources(s *snapshot.Snapshot) {
	p.section("Sources")
	t := p.table("SOURCE", "STATE", "TIME", "MESSAGE")
	for _, st := range s.Sources {
		t.row(st.Name, string(st.State), fmt.Sprintf("%.1fms", float64(st.Duration.Microseconds())/1000), st.Message)
	}
	t.flush()
}

func (p *printer) gpus(s *snapshot.Snapshot) {
	if len(s.GPUs) == 0 {
		return
	}
	p.section("GPUs")
	t := p.table("GPU", "PRODUCT", "BUS ID", "NUMA", "MEMORY", "CC", "ARCH", "PCIE", "NVLINK", "MIG", "POWER LIMIT", "UUID")
	for _, g := range s.GPUs {
		cc := "-"
		if g.ComputeMajor > 0 {
			cc = fmt.Sprintf("%d.%d", g.ComputeMajor, g.ComputeMinor)
		}
		power := "-"
		if g.PowerLimitWatts > 0 {
			power = formatFloat(g.PowerLimitWatts) + " W"
		}
		t.row(strconv.Itoa(g.Index), orDash(g.Product), g.PCIBusID, numa(g.NUMANode), gib(g.MemoryBytes), cc, orDash(g.Architecture),
			pcieText(g.PCIeLink), interconnectText(g.Interconnect), migText(g.MIG), power, g.UUID)
	}
	t.flush()
}

func pcieText(l *gpu.PCIeLink) string {
	if l == nil {
		return "-"
	}
	text := fmt.Sprintf("Gen%d x%d", l.CurrentGen, l.CurrentWidth)
	if l.CurrentGen != l.MaxGen || l.CurrentWidth != l.MaxWidth {
		text += fmt.Sprintf(" (max Gen%d x%d)", l.MaxGen, l.MaxWidth)
	}
	return text
}

func interconnectText(ic *gpu.Interconnect) string {
	if ic == nil {
		return "-"
	}
	text := fmt.Sprintf("%d/%d active", ic.Active, ic.Links)
	if ic.Kind != "nvlink" {
		text = ic.Kind + " " + text
	}
	if ic.Generation > 0 {
		text += fmt.Sprintf(", gen %d", ic.Generation)
	}
	return text
}

func migText(m gpu.MIG) string {
	if !m.Capable {
		return "n/a"
	}
	text := map[bool]string{true: "enabled", false: "disabled"}[m.Enabled]
	if m.Pending != m.Enabled {
		text += " (pending change)"
	}
	return text
}

func (p *printer) rdmaPorts(s *snapshot.Snapshot) {
	if len(s.RDMADevices) == 0 {
		return
	}
	p.section("RDMA ports")
	t := p.table("DEVICE", "PORT", "STATE", "PHYS", "LINK", "RATE", "LID", "NETDEV", "MTU", "NUMA", "PCI", "FW", "VERBS")
	for _, d := range s.RDMADevices {
		verbs := "-"
		if d.Verbs != "" {
			verbs = d.Verbs
			if !d.VerbsDevicePresent {
				verbs += " (no /dev node)"
			}
		}
		if len(d.Ports) == 0 {
			t.row(d.Name, "-", "-", "-", "-", "-", "-", "-", "-", numa(d.NUMANode), orDash(d.PCIAddress), orDash(d.FirmwareVersion), verbs)
		}
		for _, pt := range d.Ports {
			mtu := "-"
			if pt.ActiveMTU > 0 {
				mtu = strconv.Itoa(pt.ActiveMTU)
			}
			lid := "-" // not InfiniBand, or unknown
			if pt.Transport == "infiniband" && pt.LID != nil {
				lid = fmt.Sprintf("0x%x", *pt.LID)
			}
			t.row(d.Name, strconv.Itoa(pt.Number), pt.State, pt.PhysState, string(pt.Transport), formatFloat(pt.RateGbps)+" Gb/s", lid, orDash(pt.Netdev), mtu, numa(d.NUMANode), orDash(d.PCIAddress), orDash(d.FirmwareVersion), verbs)
		}
	}
	t.flush()
}

func (p *printer) numaNodes(s *snapshot.Snapshot) {
	if len(s.NUMANodes) == 0 {
		return
	}
	p.section("NUMA nodes")
	t := p.table("NODE", "CPUS", "MEMORY", "GPUS", "RDMA")
	for _, n := range s.NUMANodes {
		var gpus, nics []string
		for _, g := range s.GPUs {
			if g.NUMANode == n.ID {
				gpus = append(gpus, strconv.Itoa(g.Index))
			}
		}
		for _, d := range s.RDMADevices {
			if d.NUMANode == n.ID {
				nics = append(nics, d.Name)
			}
		}
		t.row(strconv.Itoa(n.ID), n.CPUs.String(), gib(n.MemoryBytes), joinOrDash(gpus), joinOrDash(nics))
	}
	t.flush()
	if !s.Host.IsolatedCPUs.IsEmpty() || !s.Host.NohzFullCPUs.IsEmpty() {
		p.line(fmt.Sprintf("isolated CPUs: %s; nohz_full CPUs: %s", orDash(s.Host.IsolatedCPUs.String()), orDash(s.Host.NohzFullCPUs.String())))
	}
}

func (p *printer) affinity(s *snapshot.Snapshot) {
	if len(s.GPUs) == 0 || len(s.RDMADevices) == 0 {
		return
	}
	p.section("GPU-NIC affinity (PIX same PCIe switch, PXB several switches, PHB same root complex, NODE same NUMA node, SYS across NUMA nodes)")
	head := []string{""}
	for _, d := range s.RDMADevices {
		head = append(head, d.Name)
	}
	t := p.table(head...)
	for _, g := range s.GPUs {
		rel := map[string]string{}
		for _, a := range g.Affinity {
			rel[a.RDMADevice] = a.Relation
		}
		row := []string{"GPU" + strconv.Itoa(g.Index)}
		for _, d := range s.RDMADevices {
			row = append(row, rel[d.Name])
		}
		t.row(row...)
	}
	t.flush()
}

func (p *printer) settings(s *snapshot.Snapshot) {
	if len(s.Settings) == 0 {
		return
	}
	p.section("Host settings")
	t := p.table("SETTING", "VALUE")
	for _, st := range s.Settings {
		v := st.Value
		if !st.Supported {
			v = "(not supported by kernel " + orDash(s.Host.Kernel) + ")"
		}
		t.row(st.Key, v)
	}
	t.flush()
}

func problems(s *snapshot.Snapshot) []string {
	var out []string
	for _, g := range s.GPUs {
		for _, e := range g.Errors {
			out = append(out, fmt.Sprintf("GPU %d: %s", g.Index, e))
		}
	}
	for _, d := range s.RDMADevices {
		for _, e := range d.Errors {
			out = append(out, fmt.Sprintf("%s: %s", d.Name, e))
		}
		for _, pt := range d.Ports {
			for _, e := range pt.Errors {
				out = append(out, fmt.Sprintf("%s port %d: %s", d.Name, pt.Number, e))
			}
		}
	}
	return out
}

type printer struct {
	w   io.Writer
	err error
}

func (p *printer) line(s string) {
	if p.err == nil {
		_, p.err = fmt.Fprintln(p.w, s)
	}
}

func (p *printer) section(title string) {
	p.line("")
	p.line(title)
}

type table struct {
	p  *printer
	tw *tabwriter.Writer
}

func (p *printer) table(head ...string) *table {
	t := &table{p: p, tw: tabwriter.NewWriter(p.w, 0, 0, 2, ' ', 0)}
	t.row(head...)
	return t
}

func (t *table) row(cols ...string) {
	if t.p.err == nil {
		for i, c := range cols {
			cols[i] = oneLine(c)
		}
		_, t.p.err = fmt.Fprintln(t.tw, "  "+strings.Join(cols, "\t"))
	}
}

// oneLine folds a value onto one line for a table cell or a list entry:
// line breaks (errors.Join separates its errors with them) become "; "
// and tabs a space, so a multi-line error stays in its cell.
func oneLine(s string) string { return oneLineReplacer.Replace(strings.TrimRight(s, "\r\n")) }

var oneLineReplacer = strings.NewReplacer("\r\n", "; ", "\n", "; ", "\r", "; ", "\t", " ")

func (t *table) flush() {
	if err := t.tw.Flush(); err != nil && t.p.err == nil {
		t.p.err = err
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func joinOrDash(s []string) string { return orDash(strings.Join(s, ",")) }

func numa(n int) string {
	if n < 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

func gib(b uint64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// imexText summarises the IMEX facts: whether the driver has the channel
// device, which channels exist, and the daemon with its domain size.
func imexText(x *topology.IMEX) string {
	var parts []string
	switch {
	case len(x.Channels) > 0:
		ch := make([]string, len(x.Channels))
		for i, c := range x.Channels {
			ch[i] = strconv.Itoa(c)
		}
		parts = append(parts, "channels "+strings.Join(ch, ","))
	case x.ChannelMajor > 0:
		parts = append(parts, "no channel created (driver has nvidia-caps-imex-channels)")
	default:
		parts = append(parts, "no channel device")
	}
	if x.Daemon {
		parts = append(parts, "nvidia-imex running")
	} else {
		parts = append(parts, "nvidia-imex not seen")
	}
	if x.DomainNodes > 0 {
		parts = append(parts, fmt.Sprintf("%d nodes in nodes_config.cfg", x.DomainNodes))
	}
	return strings.Join(parts, ", ")
}
