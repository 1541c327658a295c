package verbs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests need a verbs device; test/probe's VM test runs this
// package's test binary on soft-RoCE with GPUNODE_VERBS_DEVICE=rxe0 (and
// GPUNODE_VERBS_NUMA_NODE, the node its NIC sits on). This machine's
// kernel has no RDMA.
func guestDevice(t *testing.T) (*Device, string) {
	t.Helper()
	name := os.Getenv("GPUNODE_VERBS_DEVICE")
	if name == "" {
		t.Skip("needs an RDMA device (GPUNODE_VERBS_DEVICE): test/probe runs it in a soft-RoCE VM")
	}
	d, err := OpenDevice(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, name
}

// gidFile reads a GID table entry as sysfs shows it.
func gidFile(t *testing.T, dev string, index int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/sys/class/infiniband/%s/ports/1/gids/%d", dev, index))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// roceV2IPv4 is the first RoCE v2 GID holding an IPv4 address.
func roceV2IPv4(t *testing.T, dev string) int {
	t.Helper()
	types, _ := filepath.Glob(fmt.Sprintf("/sys/class/infiniband/%s/ports/1/gid_attrs/types/*", dev))
	for i := range len(types) {
		typ, err := os.ReadFile(fmt.Sprintf("/sys/class/infiniband/%s/ports/1/gid_attrs/types/%d", dev, i))
		if err == nil && strings.TrimSpace(string(typ)) == "RoCE v2" && strings.HasPrefix(gidFile(t, dev, i), "0000:0000:0000:0000:0000:ffff:") {
			return i
		}
	}
	t.Fatalf("%s has no RoCE v2 IPv4 GID", dev)
	return -1
}

// ibv_query_gid answers an emptied entry with an all-zero GID and
// success, and an index past the table with -1 and errno.
func TestGIDOnDevice(t *testing.T) {
	d, name := guestDevice(t)
	v2 := roceV2IPv4(t, name)
	if g, err := d.GID(1, v2); err != nil || g == ([16]byte{}) {
		t.Errorf("GID %d = %x, %v", v2, g, err)
	}
	empty := -1
	for i := v2 + 1; i < 64; i++ {
		if gidFile(t, name, i) == "0000:0000:0000:0000:0000:0000:0000:0000" {
			empty = i
			break
		}
	}
	if empty < 0 {
		t.Fatal("no empty GID entry in the first 64")
	}
	if g, err := d.GID(1, empty); !errors.Is(err, ErrEmptyGID) {
		t.Errorf("empty GID %d = %x, %v; want ErrEmptyGID", empty, g, err)
	}
	_, err := d.GID(1, 1<<20)
	var errno syscall.Errno
	if !errors.As(err, &errno) || errno == syscall.EPERM || errors.Is(err, ErrEmptyGID) {
		t.Errorf("GID past the table: %v; want ibv_query_gid's errno (-1 is not EPERM)", err)
	}
	t.Logf("GID past the table: %v", err)
	// A QP on an empty entry is refused before it is created.
	if _, err := d.NewQP(QPConfig{Port: 1, GIDIndex: empty, BufferSize: 4096, Depth: 16, NUMANode: -1}); !errors.Is(err, ErrEmptyGID) {
		t.Errorf("NewQP on an empty GID: %v", err)
	}
}

// pair is two QPs of one port connected to each other.
func pair(t *testing.T, d *Device, cfg QPConfig) (a, b *QP) {
	t.Helper()
	a, err := d.NewQP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	if b, err = d.NewQP(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if err := a.Connect(b.Local()); err != nil {
		t.Fatal(err)
	}
	if err := b.Connect(a.Local()); err != nil {
		t.Fatal(err)
	}
	return a, b
}

// The buffer is registered with relaxed ordering, as perftest does, and
// lands with the polling thread on the HCA's NUMA node.
func TestRelaxedOrderingAndPlacementOnDevice(t *testing.T) {
	d, name := guestDevice(t)
	node, err := strconv.Atoi(os.Getenv("GPUNODE_VERBS_NUMA_NODE"))
	if err != nil {
		t.Fatalf("GPUNODE_VERBS_NUMA_NODE: %v", err)
	}
	a, b := pair(t, d, QPConfig{Port: 1, GIDIndex: roceV2IPv4(t, name), BufferSize: 1 << 20, Depth: 64, NUMANode: node})
	if !a.RelaxedOrdering() {
		t.Error("the buffer was not registered with IBV_ACCESS_RELAXED_ORDERING")
	}
	bw, err := a.WriteBW(b.Local(), 65536, 200, 0, time.Minute)
	if err != nil || bw.Messages != 200 {
		t.Fatalf("WriteBW with relaxed ordering: %+v, %v", bw, err)
	}
	p := a.Placement()
	onNode, err := nodeCPUs(sysRoot, node)
	if err != nil {
		t.Fatal(err)
	}
	if p.NUMANode != node || p.BufferNode != node || p.ThreadCPUs != onNode.String() || len(p.Problems) > 0 {
		t.Errorf("placement %+v, want buffer and thread on node %d (CPUs %s)", p, node, onNode)
	}
	t.Logf("placement %+v, relaxed ordering %v", p, a.RelaxedOrdering())
}

// A failed send puts the QP in the error state, which flushes the receive
// the ping-pong waits on. The error names the send's cause, not the
// flush: here the peer's receive is too short for the message (rxe
// answers that with a NAK the sender completes as "remote operation
// error"); a peer that is gone shows the same way as "retry counter
// exceeded" on hardware.
func TestFlushedReceiveCauseOnDevice(t *testing.T) {
	d, name := guestDevice(t)
	a, b := pair(t, d, QPConfig{Port: 1, GIDIndex: roceV2IPv4(t, name), BufferSize: 4096, Depth: 64, NUMANode: -1})
	if err := a.PostRecv(2); err != nil {
		t.Fatal(err)
	}
	if err := b.PostRecv(1); err != nil {
		t.Fatal(err)
	}
	_, err := a.Ping(2, 10, 30*time.Second)
	if err == nil || strings.Contains(err.Error(), "flushed") || !strings.Contains(err.Error(), "remote operation error") {
		t.Errorf("ping into a receive too short: %v; want the send's cause, remote operation error", err)
	}
	t.Logf("ping into a receive too short: %v", err)
}

// gpuPair is pair over GPU memory from the fake libcuda (with its dma-buf
// unless dmabuf is false).
func gpuPair(t *testing.T, d *Device, cfg QPConfig, dmabuf bool) (a, b *QP, ma, mb *GPUMemory) {
	t.Helper()
	loadFakeCUDA(t)
	if !dmabuf {
		t.Setenv("GN_FAKE_CUDA_DMABUF", "0")
	}
	var err error
	if ma, err = AllocGPUMemory(GPUMemoryConfig{Size: cfg.BufferSize}); err != nil {
		t.Fatal(err)
	}
	if mb, err = AllocGPUMemory(GPUMemoryConfig{Size: cfg.BufferSize}); err != nil {
		ma.Close()
		t.Fatal(err)
	}
	// Cleanups run last-in first-out: the QPs (registered after this)
	// are closed before the memory is freed.
	t.Cleanup(ma.Close)
	t.Cleanup(mb.Close)
	ca, cb := cfg, cfg
	ca.GPU, cb.GPU = ma, mb
	if a, err = d.NewQP(ca); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	if b, err = d.NewQP(cb); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if err := a.Connect(b.Local()); err != nil {
		t.Fatal(err)
	}
	if err := b.Connect(a.Local()); err != nil {
		t.Fatal(err)
	}
	return a, b, ma, mb
}

// GPU memory (the fake's) registered on the device: RDMA WRITE moves one
// GPU buffer's bytes into the other, SEND/RECV runs without inline data.
// With a dma-buf the device registers it or refuses it with a reason and
// the device pointer is registered instead (the nvidia_peermem path);
// without one, the pointer straight away.
func TestGPUMemoryOnDevice(t *testing.T) {
	d, name := guestDevice(t)
	for _, dmabuf := range []bool{true, false} {
		t.Run(fmt.Sprintf("dmabuf=%v", dmabuf), func(t *testing.T) {
			a, b, ma, mb := gpuPair(t, d, QPConfig{Port: 1, GIDIndex: roceV2IPv4(t, name), BufferSize: 65536, Depth: 64, NUMANode: -1}, dmabuf)
			path, refused := a.MemoryPath(), a.DMABufRefused()
			t.Logf("registered by %s; dma-buf refused: %q", path, refused)
			switch {
			case !dmabuf && (path != PathPeerMem || refused != ""):
				t.Errorf("without a dma-buf: path %q, refusal %q", path, refused)
			case dmabuf && path == PathPeerMem && refused == "":
				t.Error("the dma-buf was neither registered nor refused")
			case path != PathDMABuf && path != PathPeerMem:
				t.Errorf("path %q", path)
			}
			src := ma.fakeBytes()
			for i := range src {
				src[i] = byte(i*7 + 3)
			}
			if bw, err := a.WriteBW(b.Local(), len(src), 1, 0, time.Minute); err != nil || bw.Messages != 1 {
				t.Fatalf("WriteBW GPU to GPU: %+v, %v", bw, err)
			}
			if dst := mb.fakeBytes(); string(dst[:len(src)]) != string(src) {
				t.Error("the write did not land in the peer's GPU memory")
			}
			if err := a.PostRecv(2); err != nil {
				t.Fatal(err)
			}
			if err := b.PostRecv(2); err != nil {
				t.Fatal(err)
			}
			errs := make(chan error, 1)
			go func() { errs <- b.Pong(2, 100, time.Minute) }()
			if half, err := a.Ping(2, 100, time.Minute); err != nil || len(half) != 100 {
				t.Errorf("Ping over GPU memory: %d samples, %v", len(half), err)
			}
			if err := <-errs; err != nil {
				t.Errorf("Pong over GPU memory: %v", err)
			}
		})
	}
}

// AMD GPU memory (the fake HSA runtime's VRAM) registered on the device:
// its dma-buf, or by address when the device refuses it or there is no
// dma-buf (the amdgpu peer-memory path); RDMA WRITE lands in the peer's
// memory, and everything is released after.
func TestAMDGPUMemoryOnDevice(t *testing.T) {
	d, name := guestDevice(t)
	loadFakeHSA(t)
	for _, dmabuf := range []bool{true, false} {
		t.Run(fmt.Sprintf("dmabuf=%v", dmabuf), func(t *testing.T) {
			if !dmabuf {
				t.Setenv("GN_FAKE_HSA_FAIL", "hsa_amd_portable_export_dmabuf")
			}
			calls := fakeHSALog(t)
			fds0 := openFDs(t)
			cfg := QPConfig{Port: 1, GIDIndex: roceV2IPv4(t, name), BufferSize: 65536, Depth: 64, NUMANode: -1}
			var ms [2]*GPUMemory
			var qps [2]*QP
			for i := range ms {
				m, err := AllocAMDGPUMemory(AMDGPUMemoryConfig{PCIBusID: "0000:c1:00.0", Size: cfg.BufferSize})
				if err != nil {
					t.Fatal(err)
				}
				ms[i] = m
				c := cfg
				c.GPU = m
				if qps[i], err = d.NewQP(c); err != nil {
					m.Close()
					t.Fatal(err)
				}
			}
			a, b := qps[0], qps[1]
			path, refused := a.MemoryPath(), a.DMABufRefused()
			t.Logf("registered by %s; dma-buf refused: %q", path, refused)
			switch {
			case !dmabuf && (path != PathPeerMem || refused != ""):
				t.Errorf("without a dma-buf: path %q, refusal %q", path, refused)
			case dmabuf && path == PathPeerMem && refused == "":
				t.Error("the dma-buf was neither registered nor refused")
			}
			if err := a.Connect(b.Local()); err != nil {
				t.Fatal(err)
			}
			if err := b.Connect(a.Local()); err != nil {
				t.Fatal(err)
			}
			src := ms[0].fakeBytes()
			for i := range src {
				src[i] = byte(i*5 + 1)
			}
			if bw, err := a.WriteBW(b.Local(), len(src), 1, 0, time.Minute); err != nil || bw.Messages != 1 {
				t.Errorf("WriteBW VRAM to VRAM: %+v, %v", bw, err)
			} else if dst := ms[1].fakeBytes(); string(dst[:len(src)]) != string(src) {
				t.Error("the write did not land in the peer's VRAM")
			}
			for i := range qps {
				qps[i].Close()
				ms[i].Close()
			}
			hsaBalanced(t, calls(), fds0)
		})
	}
}
