// Package labels turns a snapshot into Kubernetes node labels: pure
// functions, deterministic, every value valid as a label value.
package labels

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/gpunode/gpunode/agent/snapshot"
	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/rdma"
)

// Options select and shape the label sets.
type Options struct {
	// Domain prefixes the agent's own labels ("gpunode.dev").
	Domain string
}

// Set is a set of node labels.
type Set map[string]string

// Lines formats the labels as sorted "key=value" lines.
func (s Set) Lines() []string {
	out := make([]string, 0, len(s))
	for _, k := range slices.Sorted(maps.Keys(s)) {
		out = append(out, k+"="+s[k])
	}
	return out
}

// For computes the labels of a snapshot. Facts from a source that did not
// run cleanly are left out rather than guessed; a source that is absent
// (no GPU library, no RDMA) yields explicit "false"/"0" labels, because a
// CPU-only node is a fact schedulers select on too.
func For(s *snapshot.Snapshot, o Options) Set {
	out := Set{}
	key := func(k string) string { return o.Domain + "/" + k }
	put := func(k, v string) {
		if v = Value(v); v != "" {
			out[key(k)] = v
		}
	}
	ok := func(name string) (bool, bool) { // (usable, absent)
		st, ran := s.Source(name)
		return ran && st.State == source.OK, ran && st.State == source.Absent
	}

	if gpuOK, gpuAbsent := ok(gpuSource(s)); gpuOK || gpuAbsent {
		gpuLabels(s, put)
	}
	if rdmaOK, rdmaAbsent := ok("rdma"); rdmaOK || rdmaAbsent {
		rdmaLabels(s, put)
	}
	if topoOK, _ := ok("topology"); topoOK {
		put("numa.nodes", strconv.Itoa(len(s.NUMANodes)))
		if len(s.GPUs) > 0 && rdmaUsable(s) {
			put("topology.gpu-nic-aligned", strconv.FormatBool(gpuNICAligned(s)))
		}
		if len(s.GPUs) > 0 {
			put("gpudirect-rdma", strconv.FormatBool(s.GPUDirect.Possible))
		}
	}
	return out
}

// gpuSource is the name of the GPU backend's source in this snapshot.
func gpuSource(s *snapshot.Snapshot) string {
	if s.GPUDriver != nil {
		return s.GPUDriver.Backend
	}
	return "nvml"
}

func rdmaUsable(s *snapshot.Snapshot) bool {
	st, ran := s.Source("rdma")
	return ran && st.State == source.OK
}

func gpuLabels(s *snapshot.Snapshot, put func(k, v string)) {
	put("gpu.present", strconv.FormatBool(len(s.GPUs) > 0))
	put("gpu.count", strconv.Itoa(len(s.GPUs)))
	if len(s.GPUs) == 0 {
		return
	}
	// Label by the first GPU: nodes with mixed models are rare, and the
	// product label is what schedulers match on for the common case.
	g := s.GPUs[0]
	put("gpu.vendor", string(g.Vendor))
	put("gpu.product", g.Product)
	put("gpu.family", g.Architecture)
	put("gpu.memory", strconv.FormatUint(g.MemoryBytes>>20, 10))
	if g.ComputeMajor > 0 {
		put("gpu.compute", fmt.Sprintf("%d.%d", g.ComputeMajor, g.ComputeMinor))
	}
	put("gpu.mig-capable", strconv.FormatBool(g.MIG.Capable))
	if d := s.GPUDriver; d != nil {
		put("gpu.driver", d.DriverVersion)
		put("gpu.cuda", d.CUDAVersion)
	}
	// The weakest GPU decides what a workload spanning all of them gets.
	minActive, gen := -1, 0
	for _, g := range s.GPUs {
		ic := g.Interconnect
		if ic == nil || ic.Kind != "nvlink" {
			minActive = 0
			continue
		}
		if minActive < 0 || ic.Active < minActive {
			minActive = ic.Active
		}
		if ic.Active > 0 && (gen == 0 || ic.Generation < gen) {
			gen = ic.Generation
		}
	}
	if minActive > 0 {
		put("gpu.nvlink.active-links", strconv.Itoa(minActive))
		if gen > 0 {
			put("gpu.nvlink.generation", strconv.Itoa(gen))
		}
	}
}

func rdmaLabels(s *snapshot.Snapshot, put func(k, v string)) {
	put("rdma.present", strconv.FormatBool(len(s.RDMADevices) > 0))
	put("rdma.devices", strconv.Itoa(len(s.RDMADevices)))
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
		put("rdma.link-layer", string(layers[0]))
	default:
		put("rdma.link-layer", "mixed")
	}
	if minRate > 0 {
		put("rdma.rate-gbps", strconv.FormatFloat(minRate, 'f', -1, 64))
	}
}

// gpuNICAligned is true when every GPU has an RDMA device with an active
// port on its own NUMA node.
func gpuNICAligned(s *snapshot.Snapshot) bool {
	for _, g := range s.GPUs {
		if !slices.ContainsFunc(g.Affinity, func(a snapshot.Affinity) bool { return a.SameNUMA && a.Active }) {
			return false
		}
	}
	return true
}

// Value sanitises a label value to Kubernetes' rules: at most 63
// characters of [A-Za-z0-9._-], starting and ending alphanumeric. Other
// characters become '-' ("NVIDIA H100 80GB HBM3" -> "NVIDIA-H100-80GB-HBM3").
func Value(v string) string {
	b := []byte(v)
	for i, c := range b {
		if !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			b[i] = '-'
		}
	}
	// Collapse runs of '-' that substitution created.
	out := make([]byte, 0, len(b))
	for i, c := range b {
		if c == '-' && i > 0 && b[i-1] == '-' {
			continue
		}
		out = append(out, c)
	}
	if len(out) > 63 {
		out = out[:63]
	}
	return strings.TrimFunc(string(out), func(r rune) bool { return r > 127 || !isAlnum(byte(r)) })
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
