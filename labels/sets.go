package labels

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/snapshot"
)

func gpunodeSet(s *snapshot.Snapshot, e *emitter) {
	e.put(gpuPresent, strconv.FormatBool(len(s.GPUs) > 0))
	e.put(gpuCount, strconv.Itoa(len(s.GPUs)))
	if len(s.GPUs) > 0 {
		// Label by the first GPU: nodes with mixed models are rare, and the
		// product label is what schedulers match on for the common case.
		g := s.GPUs[0]
		e.put(gpuVendor, string(g.Vendor))
		e.put(gpuProduct, g.Product)
		e.put(gpuFamily, g.Architecture)
		e.put(gpuMemory, strconv.FormatUint(g.MemoryBytes>>20, 10))
		if g.ComputeMajor > 0 {
			e.put(gpuCompute, fmt.Sprintf("%d.%d", g.ComputeMajor, g.ComputeMinor))
		}
		e.put(gpuMIGCapable, strconv.FormatBool(g.MIG.Capable))
		if d := s.GPUDriver; d != nil {
			e.put(gpuDriver, d.DriverVersion)
			e.put(gpuCUDA, d.CUDAVersion)
		}
		if active, gen := nvlink(s.GPUs); active > 0 {
			e.put(gpuNVLinkActive, strconv.Itoa(active))
			if gen > 0 {
				e.put(gpuNVLinkGen, strconv.Itoa(gen))
			}
		}
		if c, _ := Clique(s.GPUs); c != "" {
			e.put(gpuClique, c)
		}
		if active := xgmi(s.GPUs); active > 0 {
			e.put(gpuXGMIActive, strconv.Itoa(active))
		}
		if p := g.Partition; p != nil && p.Compute != "" && p.Memory != "" {
			e.put(gpuPartition, strings.ToLower(p.Compute+"_"+p.Memory))
		}
	}

	e.put(rdmaPresent, strconv.FormatBool(len(s.RDMADevices) > 0))
	e.put(rdmaDevices, strconv.Itoa(len(s.RDMADevices)))
	var layers []rdma.Transport
	minRate := 0.0
	for _, d := range s.RDMADevices {
		for _, p := range d.Ports {
			if !p.Active() {
				continue
			}
			layers = append(layers, p.Transport)
			if minRate == 0 || p.RateGbps < minRate {
				minRate = p.RateGbps
			}
		}
	}
	slices.Sort(layers)
	switch layers = slices.Compact(layers); len(layers) {
	case 0:
	case 1:
		e.put(rdmaLinkLayer, string(layers[0]))
	default:
		e.put(rdmaLinkLayer, "mixed")
	}
	if minRate > 0 {
		e.put(rdmaRate, strconv.FormatFloat(minRate, 'f', -1, 64))
	}

	e.put(numaNodes, strconv.Itoa(len(s.NUMANodes)))
	if len(s.GPUs) > 0 {
		if e.states[SourceRDMA] == "ok" {
			e.put(gpuNICAligned, strconv.FormatBool(gpuNICAlignedOf(s)))
		}
		e.put(gpuDirectRDMA, strconv.FormatBool(s.GPUDirect.Possible))
	}
}

// nvlink returns the active NVLink links of the GPU with the fewest (the
// weakest GPU decides what a workload spanning all of them gets; 0 when
// any GPU has none) and the lowest generation among active links.
func nvlink(gpus []snapshot.GPU) (minActive, gen int) {
	minActive = -1
	for _, g := range gpus {
		ic := g.Interconnect
		if ic == nil || ic.Kind != "nvlink" {
			return 0, 0
		}
		if minActive < 0 || ic.Active < minActive {
			minActive = ic.Active
		}
		if ic.Active > 0 && (gen == 0 || ic.Generation < gen) {
			gen = ic.Generation
		}
	}
	return max(minActive, 0), gen
}

// xgmi returns the active XGMI links of the GPU with the fewest; 0 when
// any GPU has none.
func xgmi(gpus []snapshot.GPU) int {
	minActive := -1
	for _, g := range gpus {
		ic := g.Interconnect
		if ic == nil || ic.Kind != gpu.XGMI {
			return 0
		}
		if minActive < 0 || ic.Active < minActive {
			minActive = ic.Active
		}
	}
	return max(minActive, 0)
}

// gpuNICAlignedOf is true when every GPU has an RDMA device with an active
// port on its own NUMA node.
func gpuNICAlignedOf(s *snapshot.Snapshot) bool {
	for _, g := range s.GPUs {
		if !slices.ContainsFunc(g.Affinity, func(a snapshot.Affinity) bool { return a.SameNUMA && a.Active }) {
			return false
		}
	}
	return true
}

func llmdSet(s *snapshot.Snapshot, e *emitter) {
	if len(s.GPUs) > 0 {
		g := s.GPUs[0]
		e.put(llmdGPUNode, "true")
		e.put(llmdGPUType, strings.ToLower(Model(g.Product)))
		if active, gen := nvlink(s.GPUs); active > 0 && gen > 0 {
			e.put(llmdNVLinkGen, strconv.Itoa(gen))
		}
		switch g.Vendor {
		case gpu.NVIDIA:
			e.put(nvProduct, GFDProduct(g.Product))
		case gpu.AMD:
			e.put(amdProductLLMD, strings.ToUpper(Model(g.Product)))
			if s.GPUDriver != nil {
				e.put(llmdROCm, majorMinor(s.GPUDriver.ROCmVersion))
			}
		}
	}
	if rdmaEnabled(s.RDMADevices) {
		e.put(llmdRDMA, "enabled")
	}
}

// rdmaEnabled is true when some port is ACTIVE on a device whose verbs
// character device exists, so pods can open it.
func rdmaEnabled(devs []rdma.Device) bool {
	for _, d := range devs {
		if d.VerbsDevicePresent && slices.ContainsFunc(d.Ports, rdma.Port.Active) {
			return true
		}
	}
	return false
}

// majorMinor cuts "6.4.1" to "6.4"; input without a dot is returned as is.
func majorMinor(v string) string {
	parts := strings.SplitN(strings.TrimSpace(v), ".", 3)
	if len(parts) < 2 {
		return v
	}
	return parts[0] + "." + parts[1]
}

// nvidiaSet writes GPU Feature Discovery's labels (NVIDIA/k8s-device-plugin
// internal/lm: resource.go for gpu.*, nvml.go for cuda.* and mig.capable).
func nvidiaSet(s *snapshot.Snapshot, e *emitter) {
	var nv []snapshot.GPU
	for _, g := range s.GPUs {
		if g.Vendor == gpu.NVIDIA {
			nv = append(nv, g)
		}
	}
	if len(nv) == 0 {
		return // GFD writes no device labels without devices
	}
	// GFD labels per product name; on a node with one model (the case it
	// supports) that is every GPU. We take the first GPU's product and
	// count the GPUs that share it, deterministically.
	g := nv[0]
	count := 0
	for _, o := range nv {
		if o.Product == g.Product {
			count++
		}
	}
	e.put(nvProduct, GFDProduct(g.Product))
	e.put(nvCount, strconv.Itoa(count))
	if mib := g.MemoryBytes / (1 << 20); mib > 0 { // GFD: total / (1024*1024)
		e.put(nvMemory, strconv.FormatUint(mib, 10))
	}
	if g.ComputeMajor > 0 { // GFD writes no architecture labels for major 0
		e.put(nvFamily, GFDFamily(g.ComputeMajor, g.ComputeMinor))
		e.put(nvCompMajor, strconv.Itoa(g.ComputeMajor))
		e.put(nvCompMinor, strconv.Itoa(g.ComputeMinor))
	}
	if d := s.GPUDriver; d != nil {
		// GFD accepts "X.Y" or "X.Y.Z" and writes no version labels otherwise.
		if parts := strings.Split(d.DriverVersion, "."); len(parts) == 2 || len(parts) == 3 {
			e.put(nvDrvMajor, parts[0])
			e.put(nvDrvMinor, parts[1])
			if len(parts) == 3 {
				e.put(nvDrvRev, parts[2])
			}
			e.put(nvDrvFull, d.DriverVersion)
		}
		var major, minor int
		if _, err := fmt.Sscanf(d.CUDAVersion, "%d.%d", &major, &minor); err == nil {
			e.put(nvCUDAMajor, strconv.Itoa(major))
			e.put(nvCUDAMinor, strconv.Itoa(minor))
			e.put(nvCUDAFull, fmt.Sprintf("%d.%d", major, minor))
		}
	}
	e.put(nvMIGCapable, strconv.FormatBool(slices.ContainsFunc(nv, func(g snapshot.GPU) bool { return g.MIG.Capable })))
	if c, _ := Clique(nv); c != "" {
		e.put(nvClique, c)
	}
	// GFD's machine-type labeler writes "unknown" when it cannot read the file.
	e.put(nvMachine, cmp.Or(GFDProduct(s.Host.Machine), "unknown"))
}

// Clique returns the NVLink clique every GPU of the node is in, or "" and
// the reason there is none. Unlike GFD, which labels the clique of the
// fabric-attached GPUs and ignores the others, a GPU whose registration
// has not completed withholds the label: a pod placed by it on this node
// would find that GPU outside the domain.
func Clique(gpus []snapshot.GPU) (clique, reason string) {
	var cliques []string
	for _, g := range gpus {
		f := g.Fabric
		switch {
		case g.Vendor != gpu.NVIDIA:
			continue
		case f == nil:
			return "", fmt.Sprintf("GPU %d reports no NVLink fabric", g.Index)
		case f.State != gpu.FabricCompleted:
			return "", fmt.Sprintf("GPU %d fabric registration %s", g.Index, f.State)
		case f.Status != "success":
			return "", fmt.Sprintf("GPU %d fabric registration failed: %s", g.Index, f.Status)
		case f.Clique == "":
			return "", fmt.Sprintf("GPU %d is in no multi-node NVLink domain (zero cluster UUID)", g.Index)
		}
		cliques = append(cliques, f.Clique)
	}
	slices.Sort(cliques)
	switch cliques = slices.Compact(cliques); len(cliques) {
	case 0:
		return "", "no NVIDIA GPUs"
	case 1:
		return cliques[0], ""
	default:
		return "", "GPUs are in different cliques: " + strings.Join(cliques, ", ")
	}
}

// amdSet writes the AMD GPU node labeller's labels (ROCm/k8s-device-plugin
// cmd/k8s-node-labeller/main.go): one key per property when every GPU
// agrees, one counter key per value when they do not.
func amdSet(s *snapshot.Snapshot, e *emitter) {
	var amd []snapshot.GPU
	for _, g := range s.GPUs {
		if g.Vendor == gpu.AMD {
			amd = append(amd, g)
		}
	}
	if len(amd) == 0 {
		return
	}
	counted := func(single, perValue *Def, value func(g snapshot.GPU) string) {
		counts := map[string]int{}
		for _, g := range amd {
			if v := value(g); v != "" {
				counts[v]++
			}
		}
		if len(counts) == 1 {
			for v := range counts {
				e.put(single, v)
			}
			return
		}
		for v, n := range counts {
			if perValue != nil {
				e.putSuffix(perValue, v, strconv.Itoa(n))
			}
		}
	}
	// Only CDNA's family is known to us (AI), so GPUs never disagree on it.
	counted(amdFamily, nil, func(g snapshot.GPU) string { return AMDFamily(g.Architecture) })
	counted(amdDeviceID, amdDeviceIDN, func(g snapshot.GPU) string {
		return strings.ToLower(strings.TrimPrefix(g.PCIDeviceID, "0x"))
	})
	// The labeller replaces spaces with '_' and drops parentheses.
	counted(amdProductName, amdProductNameN, func(g snapshot.GPU) string {
		return strings.NewReplacer(" ", "_", "(", "", ")", "").Replace(strings.TrimSpace(g.Product))
	})
	// The labeller rounds MiB/1024 to the nearest GiB and appends "G".
	counted(amdVRAM, amdVRAMN, func(g snapshot.GPU) string {
		if g.MemoryBytes == 0 {
			return ""
		}
		return fmt.Sprintf("%dG", int(math.Round(float64(g.MemoryBytes>>20)/1024)))
	})
	counted(amdCUCount, amdCUCountN, func(g snapshot.GPU) string {
		if g.ComputeUnits == 0 {
			return ""
		}
		return strconv.Itoa(g.ComputeUnits)
	})
	if s.GPUDriver != nil {
		e.put(amdDriverVersion, s.GPUDriver.DriverVersion)
	}
}
