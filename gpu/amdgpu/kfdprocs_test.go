package amdgpu_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/gpu/amdgpu"
)

// KFD's per-process files on the captured MI300X in CPX mode (eight
// partitions per GPU). The capture has no gpu_id files and no processes:
// the test gives each GPU node a gpu_id and lays out processes as
// drivers/gpu/drm/amd/amdkfd/kfd_process.c names them
// (proc/<pid>/vram_<gpu_id> in bytes, stats_<gpu_id>/cu_occupancy).
func TestKFDProcesses(t *testing.T) {
	c := kfdCaptures[0]
	root, fsys := capture(t, c.archive)
	addCards(t, root, c.deviceID, c.buses)
	nodes, err := filepath.Glob(filepath.Join(root, "sys/class/kfd/kfd/topology/nodes/*"))
	if err != nil {
		t.Fatal(err)
	}
	onBus := map[int64][]string{} // PCI bus number -> gpu_ids of its partitions
	for _, dir := range nodes {
		props, err := os.ReadFile(filepath.Join(dir, "properties"))
		if err != nil {
			t.Fatal(err)
		}
		p := map[string]int64{}
		for _, l := range strings.Split(string(props), "\n") {
			if k, v, ok := strings.Cut(l, " "); ok {
				p[k], _ = strconv.ParseInt(v, 10, 64)
			}
		}
		id := "0" // a CPU node
		if p["simd_count"] > 0 {
			id = strconv.Itoa(40000 + len(onBus[p["location_id"]>>8]) + 100*int(p["location_id"]>>8))
			onBus[p["location_id"]>>8] = append(onBus[p["location_id"]>>8], id)
		}
		write(t, filepath.Join(dir, "gpu_id"), id+"\n")
	}
	gpu0, gpu7 := onBus[0x05], onBus[0xe5]
	// The capture's GPU 7 shows seven of its partitions (266 compute units).
	if len(gpu0) != 8 || len(gpu7) != 7 {
		t.Fatalf("partitions: GPU 0 %v, GPU 7 %v", gpu0, gpu7)
	}
	proc := filepath.Join(root, "sys/class/kfd/kfd/proc")
	// pid 4242 holds memory on two partitions of GPU 0 and occupies 76 of
	// its 304 compute units; pid 4243 runs on GPU 7 under a kernel
	// without the stats directory; pid 4244 opened /dev/kfd but holds no
	// GPU memory on any partition listed.
	write(t, filepath.Join(proc, "4242", "vram_"+gpu0[0]), "1073741824\n")
	write(t, filepath.Join(proc, "4242", "vram_"+gpu0[1]), "1073741824\n")
	write(t, filepath.Join(proc, "4242", "stats_"+gpu0[0], "cu_occupancy"), "38\n")
	write(t, filepath.Join(proc, "4242", "stats_"+gpu0[1], "cu_occupancy"), "38\n")
	write(t, filepath.Join(proc, "4242", "sdma_"+gpu0[0]), "1200\n")
	write(t, filepath.Join(proc, "4243", "vram_"+gpu7[3]), "4096\n")
	write(t, filepath.Join(proc, "4244", "pasid"), "32770\n")

	samples, err := amdgpu.New(fsys).Sample(context.Background())
	if len(samples) != 8 {
		t.Fatalf("%d samples (%v)", len(samples), err)
	}
	p0 := samples[0].Processes
	if len(p0) != 1 || p0[0].PID != 4242 || *p0[0].MemoryUsedBytes != 2<<30 || p0[0].SMUtilization == nil || *p0[0].SMUtilization != 0.25 {
		t.Errorf("GPU 0 processes %+v", p0)
	}
	p7 := samples[7].Processes
	if len(p7) != 1 || p7[0].PID != 4243 || *p7[0].MemoryUsedBytes != 4096 || p7[0].SMUtilization != nil {
		t.Errorf("GPU 7 processes %+v", p7)
	}
	if p := samples[3].Processes; p == nil || len(p) != 0 {
		t.Errorf("GPU 3 processes %#v, want an empty list", p)
	}
}
