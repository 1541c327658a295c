package amdgpu

import (
	"cmp"
	"slices"
	"strconv"

	"github.com/gpunode/gpunode/gpu"
)

// kfdProcs is where the KFD lists the processes that opened /dev/kfd, one
// directory per host pid (drivers/gpu/drm/amd/amdkfd/kfd_process.c:
// "proc/<pid>/vram_<gpuid>", "sdma_<gpuid>", and "stats_<gpuid>/cu_occupancy"
// on kernels that have it), keyed by the gpu_id of the KFD topology node.
const kfdProcs = "/sys/class/kfd/kfd/proc"

// kfdGPUIDs maps each card's bus id to the KFD gpu_ids of its topology
// nodes (several for a GPU in a compute partition mode) and sums their
// compute units. A node that cannot be read is left out.
func (b *Backend) kfdGPUIDs(cards []card) map[string][]uint32 {
	names, err := b.fs.Names(kfdNodes)
	if err != nil {
		return nil
	}
	addrs := make([]pciAddr, len(cards))
	for i, c := range cards {
		addrs[i] = c.addr
	}
	out := map[string][]uint32{}
	for _, name := range names {
		dir := kfdNodes + "/" + name
		idText, err := b.fs.ReadString(dir + "/gpu_id")
		if err != nil {
			continue
		}
		id, err := strconv.ParseUint(idText, 10, 32)
		if err != nil || id == 0 {
			continue // a CPU node
		}
		s, err := b.fs.ReadString(dir + "/properties")
		if err != nil {
			continue
		}
		props, err := parseKFDProperties(s)
		if err != nil {
			continue
		}
		n := kfdGPUNode{domain: props["domain"], location: props["location_id"]}
		// kfdGPUs places a node on its card as topology does.
		for bus := range kfdGPUs([]kfdGPUNode{n}, addrs) {
			out[bus] = append(out[bus], uint32(id))
		}
	}
	for bus := range out {
		slices.Sort(out[bus])
	}
	return out
}

// kfdProcesses reads the processes on one card (its KFD gpu_ids, its
// compute units) from the KFD's per-process files: the VRAM each holds on
// the card, summed over the card's partitions, and where the kernel has
// it, the compute units its waves occupy as a share of the card's. It
// runs in the card's own read, as reading cu_occupancy asks the GPU. Nil
// when the KFD has no process directory (a kernel without it).
func (b *Backend) kfdProcesses(ids []uint32, cus int) []gpu.Process {
	pids, err := b.fs.Names(kfdProcs)
	if err != nil {
		return nil
	}
	out := []gpu.Process{}
	for _, name := range pids {
		pid, err := strconv.ParseUint(name, 10, 32)
		if err != nil {
			continue
		}
		dir := kfdProcs + "/" + name
		var p *gpu.Process
		occupied, occKnown := int64(0), false
		for _, id := range ids {
			idText := strconv.FormatUint(uint64(id), 10)
			v, err := b.fs.ReadInt(dir + "/vram_" + idText)
			if err != nil || v < 0 {
				continue // not on this partition, or the process exited
			}
			if p == nil {
				p = &gpu.Process{PID: uint32(pid), Kind: gpu.ProcessCompute}
			}
			p.MemoryUsedBytes = ptr(deref(p.MemoryUsedBytes) + uint64(v))
			if c, err := b.fs.ReadInt(dir + "/stats_" + idText + "/cu_occupancy"); err == nil && c >= 0 {
				occupied, occKnown = occupied+c, true
			}
		}
		if p == nil {
			continue
		}
		if occKnown && cus > 0 {
			p.SMUtilization = ptr(min(1, float64(occupied)/float64(cus)))
		}
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b gpu.Process) int { return cmp.Compare(a.PID, b.PID) })
	return out
}

func deref[T any](p *T) T {
	var v T
	if p != nil {
		v = *p
	}
	return v
}
