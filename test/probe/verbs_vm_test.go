package probe_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/rdma/probe"
	"github.com/gpunode/gpunode/test/vm"
)

// buildTest builds the test binary of package pkg (under rdma/), whose
// device tests run inside the VM against rxe0, as pkg.test.
func buildTest(t testing.TB, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), pkg+".test")
	cmd := exec.Command("go", "test", "-c", "-o", bin, "github.com/gpunode/gpunode/rdma/"+pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "CGO_CFLAGS=-O2 -g -Wno-deprecated-declarations")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the %s tests: %v\n%s", pkg, err, out)
	}
	return bin
}

// fakeLib builds one of rdma/verbs' stand-in GPU libraries for the guest.
func fakeLib(t testing.TB, name, src string) string {
	t.Helper()
	lib := filepath.Join(t.TempDir(), name)
	if out, err := exec.Command("gcc", "-shared", "-fPIC", "-Wall", "-Werror", "-O1", "-Wl,-soname,"+name, "-o", lib,
		"../../rdma/verbs/testdata/"+src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return lib
}

// fakeCUDA builds rdma/verbs' stand-in libcuda.so.1 for the guest, which
// has no compiler: "device memory" that rxe registers by address, as
// nvidia_peermem lets a NIC register real device memory.
func fakeCUDA(t testing.TB) string {
	t.Helper()
	return fakeLib(t, "libcuda.so.1", "fake_cuda.c")
}

// verbsScript runs the verbs device tests on rxe0, whose NIC sits on NUMA
// node 1 (with GPU memory from the fake libcuda and the fake HSA runtime), then a loopback probe
// through the agent (its placement and registration) on host memory and
// on GPU memory, then one with only a link-local IPv4 address on the
// NIC.
const verbsScript = `
rdma link add rxe0 type rxe netdev eth0
echo "== verbs-tests"
GPUNODE_FAKE_CUDA=/usr/lib/gpunode-test/libcuda.so.1 GPUNODE_FAKE_HSA=/usr/lib/gpunode-test/libhsa-runtime64.so.1 GPUNODE_VERBS_DEVICE=rxe0 GPUNODE_VERBS_NUMA_NODE=1 verbs.test -test.run 'OnDevice' -test.v 2>&1
echo "== rc $?"
echo "== node1-cpus"; cat /sys/devices/system/node/node1/cpulist; echo "== end"
echo "== loopback"; gpunode-agent probe loopback --kind bw --iterations 200 -o json; echo "== rc $?"
echo "== udmabuf"; ls -l /dev/udmabuf 2>&1; echo "== end"
echo "== gpu-loopback"
LD_LIBRARY_PATH=/usr/lib/gpunode-test gpunode-agent probe loopback --memory gpu --gpu 0000:17:00.0 --iterations 200 -o json
echo "== rc $?"
echo 0123456789abcdef0123 > /tmp/token
GN_FAKE_CUDA_DEVICES=0000:17:00.0,0000:3d:00.0 LD_LIBRARY_PATH=/usr/lib/gpunode-test gpunode-agent --log.level=debug probe serve --gpu 0000:3d:00.0 --listen 10.0.2.15:9836 --token-file /tmp/token > /tmp/serve.log 2>&1 &
sleep 2
echo "== gpu-peer"
LD_LIBRARY_PATH=/usr/lib/gpunode-test gpunode-agent probe bw --token-file /tmp/token --peer 10.0.2.15 --memory gpu --gpu 0000:17:00.0 --iterations 200 -o json
echo "== rc $?"
echo "== gpu-peer-lat"
LD_LIBRARY_PATH=/usr/lib/gpunode-test gpunode-agent probe lat --token-file /tmp/token --peer 10.0.2.15 --memory gpu --gpu 0000:17:00.0 --iterations 200 -o json
echo "== rc $?"
echo "== gpu-serve-log"; cat /tmp/serve.log; echo "== end"
echo "== probe-tests"
GPUNODE_FAKE_CUDA=/usr/lib/gpunode-test/libcuda.so.1 GPUNODE_PROBE_DEVICE=rxe0 probe.test -test.run 'OnDevice' -test.v 2>&1
echo "== rc $?"
ip addr flush dev eth0
ip addr add 169.254.10.11/16 dev eth0
sleep 1
echo "== gids"; cat /sys/class/infiniband/rxe0/ports/1/gids/* | grep -v '^0000:0000:0000:0000:0000:0000:0000:0000$'; echo "== end"
echo "== link-local"; gpunode-agent probe loopback --kind bw --iterations 200 2>&1; echo "== rc $?"
`

// The verbs binding on a real kernel: ibv_query_gid's empty entries and
// failures, relaxed ordering accepted, buffer and polling thread on the
// HCA's NUMA node, a vanished peer reported by its cause; and the probe
// refusing a link-local RoCE address.
func TestVerbsOnSoftRoCE(t *testing.T) {
	cfg := machine(t, verbsScript)
	cfg.Binaries = append(cfg.Binaries, buildTest(t, "verbs"), buildTest(t, "probe"))
	cfg.Files = append(cfg.Files, vm.File{Path: "/usr/lib/gpunode-test/libcuda.so.1", HostPath: fakeCUDA(t), Mode: 0o755})
	cfg.Files = append(cfg.Files, vm.File{Path: "/usr/lib/gpunode-test/libhsa-runtime64.so.1", HostPath: fakeLib(t, "libhsa-runtime64.so.1", "fake_hsa.c"), Mode: 0o755})
	cfg.CPUs, cfg.MemoryMiB = 0, 0
	cfg.NUMA = []vm.NUMANode{{CPUs: 1, MemoryMiB: 512}, {CPUs: 1, MemoryMiB: 512}}
	cfg.NICs = []vm.NIC{{NUMANode: 1, IPv4: "10.0.2.15/24"}}
	secs := runVM(t, cfg)

	v := secs["verbs-tests"]
	if v.rc != 0 || !strings.Contains(v.body, "--- PASS: TestGIDOnDevice") || !strings.Contains(v.body, "--- PASS: TestRelaxedOrderingAndPlacementOnDevice") ||
		!strings.Contains(v.body, "--- PASS: TestFlushedReceiveCauseOnDevice") || !strings.Contains(v.body, "--- PASS: TestGPUMemoryOnDevice") ||
		!strings.Contains(v.body, "--- PASS: TestAMDGPUMemoryOnDevice") {
		t.Errorf("verbs tests on rxe0: exit %d\n%s", v.rc, v.body)
	}

	res := find(t, parseReport(t, secs, "loopback"), probe.KindWriteBW)
	cpus := strings.TrimSpace(secs["node1-cpus"].body)
	if p := res.Placement; !res.RelaxedOrdering || p == nil || p.NUMANode != 1 || p.BufferNode != 1 || p.ThreadCPUs != cpus || len(p.Problems) > 0 {
		t.Errorf("loopback on rxe0 (NIC on node 1, CPUs %s): relaxed ordering %v, placement %+v", cpus, res.RelaxedOrdering, p)
	}
	if res.Local.NUMANode != 1 || res.LineRateFraction != 0 {
		t.Errorf("loopback result %+v: want node 1 (discovered through virtio0's PCI function) and no line-rate fraction (loopback never meets the link)", res)
	}

	// GPU memory on rxe: the dma-buf is refused (see gpuRefusal) and the
	// address registered instead, the nvidia_peermem path, for both kinds.
	t.Logf("/dev/udmabuf in the guest: %s", strings.TrimSpace(secs["udmabuf"].body))
	gl := parseReport(t, secs, "gpu-loopback")
	for _, kind := range []string{probe.KindWriteBW, probe.KindSendLat} {
		r := find(t, gl, kind)
		if r.Memory != "gpu" || r.GPU == nil || r.GPU.PCIBusID != "0000:17:00.0" || r.GPU.Index != -1 || r.GPU.Path != "peermem" || r.GPU.DMABuf != rxeDMABufRefusal || r.Messages == 0 && r.Latency == nil {
			t.Errorf("%s over GPU memory on rxe0: %+v (gpu %+v)", kind, r, r.GPU)
		}
		t.Logf("%s over GPU memory: %.0f B/s, latency %+v, gpu %+v", kind, r.BytesPerSecond, r.Latency, *r.GPU)
	}

	// To a peer (this VM's own server, answering from another GPU): both
	// ends' buffers are GPU memory, protocol version 3.
	for _, sec := range []string{"gpu-peer", "gpu-peer-lat"} {
		for _, r := range parseReport(t, secs, sec).Results {
			if r.Memory != "gpu" || r.GPU == nil || r.GPU.PCIBusID != "0000:17:00.0" || r.GPU.Path != "peermem" {
				t.Errorf("%s: %+v (gpu %+v)", sec, r, r.GPU)
			}
		}
	}
	if log := secs["gpu-serve-log"].body; strings.Count(log, "gpu=0000:3d:00.0 gpu_path=peermem") != 2 {
		t.Errorf("the server did not answer from GPU 0000:3d:00.0's memory twice:\n%s", log)
	}

	// The daemon's rounds over GPU memory: loopback and to a peer on the
	// GPU's rail (rdma/probe's TestSchedulerGPUMemoryOnDevice).
	if p := secs["probe-tests"]; p.rc != 0 || !strings.Contains(p.body, "--- PASS: TestSchedulerGPUMemoryOnDevice") {
		t.Errorf("probe tests on rxe0: exit %d\n%s", p.rc, p.body)
	}

	if ll := secs["link-local"]; ll.rc != 1 || !strings.Contains(ll.body, probe.ErrNoPort.Error()) {
		t.Errorf("loopback with only a link-local address (GIDs %q): exit %d: %s", secs["gids"].body, ll.rc, ll.body)
	}
}

// rxeDMABufRefusal is how soft-RoCE answers ibv_reg_dmabuf_mr (Debian
// 12's kernel 6.1 and rdma-core 44), seen in this test's VM: the
// fake's dma-buf is a memfd there (the guest kernel has no
// CONFIG_UDMABUF), but the refusal comes before the descriptor is looked
// at: soft-RoCE has no dma-buf memory regions (that kernel's rdma_rxe.ko
// takes user memory through ib_umem_get only, never ib_umem_dmabuf_get).
const rxeDMABufRefusal = "ibv_reg_dmabuf_mr: operation not supported (errno 95)"
