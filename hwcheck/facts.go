package hwcheck

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/gpunode/gpunode/gpu"
)

const secNVIDIA = "nvidia"

// NVLinkStatus is one GPU's links as `nvidia-smi nvlink -s` lists them.
type NVLinkStatus struct {
	Links  int
	Active int
}

var (
	nvlinkGPU  = regexp.MustCompile(`^GPU (\d+): [^(]*(?:\(UUID: (GPU-[0-9a-fA-F-]+)\))?`)
	nvlinkLink = regexp.MustCompile(`^\s*Link \d+: (.*)$`)
)

// ParseNVLinkStatus parses `nvidia-smi nvlink -s`: per GPU, the links
// listed and those with a speed (an inactive link reads "<inactive>").
// GPUs are keyed by UUID, or by "index N" where the line names none.
func ParseNVLinkStatus(r io.Reader) (map[string]NVLinkStatus, error) {
	out := map[string]NVLinkStatus{}
	cur := ""
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if m := nvlinkGPU.FindStringSubmatch(line); m != nil {
			cur = m[2]
			if cur == "" {
				cur = "index " + m[1]
			}
			out[cur] = NVLinkStatus{}
			continue
		}
		m := nvlinkLink.FindStringSubmatch(line)
		if m == nil || cur == "" {
			continue
		}
		st := out[cur]
		st.Links++
		if v, ok := number(m[1]); ok && v > 0 {
			st.Active++
		}
		out[cur] = st
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read nvidia-smi nvlink -s: %w", err)
	}
	return out, nil
}

// CompareNVIDIAFacts compares the agent's inventory with `nvidia-smi -q -x`
// (and `nvidia-smi nvlink -s` when nvlink is not nil), GPU by GPU, matched
// by UUID.
func CompareNVIDIAFacts(agent *Inspect, smi *SMILog, nvlink map[string]NVLinkStatus) []Row {
	var rows []Row
	var drv, cuda string
	if agent.GPUDriver != nil {
		drv, cuda = agent.GPUDriver.DriverVersion, agent.GPUDriver.CUDAVersion
	}
	rows = append(rows, exact(secNVIDIA, "", "driver version", drv, na(smi.DriverVersion)))
	if na(smi.CUDAVersion) == "" {
		rows = append(rows, absentRow(secNVIDIA, "", "CUDA version", cuda, "nvidia-smi before R410 does not print it"))
	} else {
		rows = append(rows, exact(secNVIDIA, "", "CUDA version", cuda, na(smi.CUDAVersion)))
	}
	seen := 0
	if agent.GPUDriver != nil {
		seen = len(agent.GPUDriver.GPUsNotVisible)
	}
	rows = append(rows, exact(secNVIDIA, "", "GPU count", strconv.Itoa(len(agent.GPUs)+seen), strconv.Itoa(len(smi.GPUs))))
	for i := range smi.GPUs {
		s := &smi.GPUs[i]
		d, ok := agent.GPU(s.UUID)
		if !ok {
			rows = append(rows, Row{Section: secNVIDIA, Device: s.UUID, Fact: "GPU", Agent: "(missing)",
				Vendor: s.ProductName + " at " + s.PCI.BusID, Verdict: Differ})
			continue
		}
		rows = append(rows, gpuFacts(d, s, nvlink)...)
	}
	for _, d := range agent.GPUs {
		found := false
		for i := range smi.GPUs {
			found = found || smi.GPUs[i].UUID == d.UUID
		}
		if !found {
			rows = append(rows, Row{Section: secNVIDIA, Device: d.UUID, Fact: "GPU", Agent: d.Product + " at " + d.PCIBusID,
				Vendor: "(missing)", Verdict: Differ})
		}
	}
	return rows
}

func gpuFacts(d gpu.Device, s *SMIGPU, nvlink map[string]NVLinkStatus) []Row {
	dev := fmt.Sprintf("gpu%d", d.Index)
	rows := []Row{
		exact(secNVIDIA, dev, "product", d.Product, s.ProductName),
		exact(secNVIDIA, dev, "UUID", d.UUID, s.UUID),
		exact(secNVIDIA, dev, "PCI bus id", d.PCIBusID, gpu.NormalizePCIBusID(s.PCI.BusID)),
	}
	if a := strings.Fields(na(s.Architecture)); len(a) > 0 {
		// "Ada Lovelace" is the agent's "ada".
		rows = append(rows, exact(secNVIDIA, dev, "architecture", d.Architecture, strings.ToLower(a[0])))
	}
	if v := na(s.Serial); v != "" {
		rows = append(rows, exact(secNVIDIA, dev, "serial", d.Serial, v))
	}
	if v := na(s.VBIOSVersion); v != "" {
		rows = append(rows, exact(secNVIDIA, dev, "VBIOS version", d.VBIOSVersion, v))
	}

	// Memory: NVML's total in bytes against nvidia-smi's MiB, which it
	// rounds down.
	if mib, ok := number(s.FBMemory.Total); ok {
		r := exact(secNVIDIA, dev, "memory total (MiB)", strconv.FormatUint(d.MemoryBytes>>20, 10), strconv.FormatFloat(mib, 'f', -1, 64))
		r.Tolerance = "1 MiB"
		if math.Abs(float64(d.MemoryBytes)/(1<<20)-mib) <= 1 {
			r.Verdict = Agree
		}
		rows = append(rows, r)
	}

	rows = append(rows, pcieRows(dev, d.PCIeLink, s)...)

	if w, ok := number(s.PowerLimit()); ok {
		r := exact(secNVIDIA, dev, "power limit (W)", formatW(d.PowerLimitWatts), formatW(w))
		r.Tolerance = "0.01 W"
		r.Note = "NVML's enforced limit (mW) against nvidia-smi's, printed to 0.01 W"
		if math.Abs(d.PowerLimitWatts-w) <= 0.01 {
			r.Verdict = Agree
		}
		rows = append(rows, r)
	} else {
		rows = append(rows, absentRow(secNVIDIA, dev, "power limit (W)", formatW(d.PowerLimitWatts), "nvidia-smi reports no enforced limit"))
	}

	rows = append(rows, modeRow(dev, "ECC mode (current)", eccCurrent(d.ECC), s.ECC.Current))
	rows = append(rows, modeRow(dev, "ECC mode (pending)", eccPending(d.ECC), s.ECC.Pending))
	migCur, migPend := "N/A", "N/A"
	if d.MIG.Capable {
		migCur, migPend = enabledText(d.MIG.Enabled), enabledText(d.MIG.Pending)
	}
	rows = append(rows, modeRow(dev, "MIG mode (current)", migCur, s.MIG.Current))
	rows = append(rows, modeRow(dev, "MIG mode (pending)", migPend, s.MIG.Pending))

	var fabState, fabStatus string
	if d.Fabric != nil {
		fabState, fabStatus = d.Fabric.State, strings.ToLower(d.Fabric.Status)
	}
	if vs := fabricState(s.Fabric.State); vs != "" || fabState != "" {
		rows = append(rows, exact(secNVIDIA, dev, "NVLink fabric state", fabState, vs))
		if vs == gpu.FabricCompleted {
			rows = append(rows, exact(secNVIDIA, dev, "NVLink fabric status", fabStatus, strings.ToLower(na(s.Fabric.Status))))
		}
		var agentClique string
		if d.Fabric != nil {
			agentClique = d.Fabric.Clique
		}
		if vc := smiClique(s); vc != "" || agentClique != "" {
			rows = append(rows, exact(secNVIDIA, dev, "NVLink clique", agentClique, vc))
		}
	}

	links, active := "", ""
	if ic := d.Interconnect; ic != nil && ic.Kind == "nvlink" {
		links, active = strconv.Itoa(ic.Links), strconv.Itoa(ic.Active)
	}
	st, ok := nvlink[d.UUID]
	if !ok {
		st, ok = nvlink[fmt.Sprintf("index %d", d.Index)]
	}
	switch {
	case nvlink == nil:
		rows = append(rows, absentRow(secNVIDIA, dev, "NVLink links active", active, "nvidia-smi nvlink -s did not run"))
	case !ok || st.Links == 0:
		// nvidia-smi lists no links: a GPU without NVLink. The agent
		// must not claim any.
		r := exact(secNVIDIA, dev, "NVLink links active", active, "")
		r.Note = "nvidia-smi nvlink -s lists no link"
		rows = append(rows, r)
	default:
		rows = append(rows, exact(secNVIDIA, dev, "NVLink links", links, strconv.Itoa(st.Links)))
		rows = append(rows, exact(secNVIDIA, dev, "NVLink links active", active, strconv.Itoa(st.Active)))
	}
	return rows
}

func pcieRows(dev string, l *gpu.PCIeLink, s *SMIGPU) []Row {
	smiVals := []string{s.PCI.Link.Gen.Current, s.PCI.Link.Gen.Max, s.PCI.Link.Widths.Current, s.PCI.Link.Widths.Max}
	names := []string{"PCIe generation (current)", "PCIe generation (max)", "PCIe width (current)", "PCIe width (max)"}
	var agentVals [4]string
	if l != nil {
		agentVals = [4]string{strconv.Itoa(l.CurrentGen), strconv.Itoa(l.MaxGen), strconv.Itoa(l.CurrentWidth), strconv.Itoa(l.MaxWidth)}
	}
	var rows []Row
	for i, name := range names {
		v, ok := number(smiVals[i])
		if !ok {
			rows = append(rows, absentRow(secNVIDIA, dev, name, agentVals[i], "nvidia-smi: "+dash(smiVals[i])))
			continue
		}
		r := exact(secNVIDIA, dev, name, agentVals[i], strconv.Itoa(int(v)))
		if i < 2 {
			// The current generation drops in low performance states;
			// both tools read it at different moments.
			r.Note = "read at P-state agent " + dash(pstate(l)) + ", nvidia-smi " + dash(na(s.PerformanceState))
		}
		rows = append(rows, r)
	}
	return rows
}

func pstate(l *gpu.PCIeLink) string {
	if l == nil {
		return ""
	}
	return l.PerformanceState
}

// modeRow compares an Enabled/Disabled mode; an agent "N/A" agrees with
// nvidia-smi's N/A (the GPU has no such mode).
func modeRow(dev, fact, agent, smi string) Row {
	vendor := "N/A"
	if b, ok := modeBool(smi); ok {
		vendor = enabledText(b)
	}
	return exact(secNVIDIA, dev, fact, agent, vendor)
}

func eccCurrent(e *gpu.ECCMode) string {
	if e == nil {
		return "N/A"
	}
	return enabledText(e.Enabled)
}

func eccPending(e *gpu.ECCMode) string {
	if e == nil {
		return "N/A"
	}
	return enabledText(e.Pending)
}

func enabledText(b bool) string {
	if b {
		return "Enabled"
	}
	return "Disabled"
}

func formatW(w float64) string {
	return strconv.FormatFloat(w, 'f', 2, 64)
}

// smiClique is nvidia-smi's fabric cluster UUID and clique id in the
// agent's (and GFD's) "<cluster UUID>.<clique id>" form; "" where either
// is N/A or the UUID is all zeros (no multi-node domain).
func smiClique(s *SMIGPU) string {
	uuid, id := strings.ToLower(na(s.Fabric.ClusterUUID)), na(s.Fabric.CliqueID)
	if uuid == "" || id == "" || strings.Trim(uuid, "0-") == "" {
		return ""
	}
	return uuid + "." + id
}
