package verbs

/*
#include <stdlib.h>
#include "gn_gpumem.h"
#include "gn_hsa.h"
#include "gn_verbs.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"unsafe"
)

// CUDALibrary is the CUDA driver library GPU memory comes from.
const CUDALibrary = "libcuda.so.1"

// ErrNoCUDA: the CUDA driver library could not be loaded.
var ErrNoCUDA = errors.New("CUDA driver library not available")

// Memory kinds a probe's buffers live in.
const (
	MemoryHost = "host"
	MemoryGPU  = "gpu"
)

// Registration paths of GPU memory (QP.MemoryPath).
const (
	// PathDMABuf: the memory's dma-buf was registered
	// (ibv_reg_dmabuf_mr), the upstream path (open NVIDIA kernel module,
	// Linux 5.12+).
	PathDMABuf = "dmabuf"
	// PathPeerMem: the device pointer was registered with ibv_reg_mr,
	// which works only through a peer-memory client (nvidia_peermem, or
	// amdgpu's for ROCm memory).
	PathPeerMem = "peermem"
)

// CUDAError is a failed CUDA driver call.
type CUDAError struct {
	Call   string
	Result int
	// Name is cuGetErrorName's ("CUDA_ERROR_OUT_OF_MEMORY").
	Name string
}

func (e *CUDAError) Error() string {
	return fmt.Sprintf("%s: %s (CUresult %d)", e.Call, cmpOr(e.Name, "unknown error"), e.Result)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// LoadCUDA opens the CUDA driver library at path (CUDALibrary, or a full
// path) once per process: later calls keep the first library that loaded.
func LoadCUDA(path string) error {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var buf [512]C.char
	if C.gn_cuda_load(cpath, &buf[0], C.size_t(len(buf))) != 0 {
		return fmt.Errorf("%w: %s", ErrNoCUDA, C.GoString(&buf[0]))
	}
	return nil
}

// GPUMemory is device memory on one GPU, with its dma-buf when the driver
// exports one. Close frees it; a QP registered over it must be closed
// first.
type GPUMemory struct {
	mu sync.Mutex
	// m is CUDA memory, hsa ROCm's: one of them is set.
	m   *C.struct_gn_gpumem
	hsa *C.struct_gn_hsamem
	gpu string
}

// GPUMemoryConfig says where and how much.
type GPUMemoryConfig struct {
	// Library is the CUDA driver library (CUDALibrary when empty).
	Library string
	// PCIBusID ("0000:17:00.0") picks the GPU; when empty, Ordinal does
	// (CUDA's numbering).
	PCIBusID string
	Ordinal  int
	// Size is rounded up to the GPU page (64 KiB).
	Size int
}

// MaxGPUMemory bounds an allocation: a probe borrows memory from a GPU
// that may be serving a model.
const MaxGPUMemory = 256 << 20

// AllocGPUMemory allocates device memory through the CUDA driver API.
// Nothing stays allocated when it fails.
func AllocGPUMemory(cfg GPUMemoryConfig) (*GPUMemory, error) {
	if cfg.Size < 1 || cfg.Size > MaxGPUMemory {
		return nil, fmt.Errorf("GPU memory size %d out of range 1..%d", cfg.Size, MaxGPUMemory)
	}
	if err := LoadCUDA(cmpOr(cfg.Library, CUDALibrary)); err != nil {
		return nil, err
	}
	gpu := cfg.PCIBusID
	if gpu == "" {
		gpu = fmt.Sprintf("CUDA device %d", cfg.Ordinal)
	}
	m := (*C.struct_gn_gpumem)(C.calloc(1, C.size_t(unsafe.Sizeof(C.struct_gn_gpumem{}))))
	if m == nil {
		return nil, errors.New("allocate GPU memory state: out of memory")
	}
	cbus := C.CString(cfg.PCIBusID)
	defer C.free(unsafe.Pointer(cbus))
	var stage *C.char
	if rc := C.gn_cuda_alloc(m, cbus, C.int(cfg.Ordinal), C.size_t(cfg.Size), &stage); rc != 0 {
		C.free(unsafe.Pointer(m))
		return nil, fmt.Errorf("GPU memory on %s: %w", gpu, cudaError(C.GoString(stage), int(rc)))
	}
	return &GPUMemory{m: m, gpu: gpu}, nil
}

func cudaError(call string, rc int) error {
	e := &CUDAError{Call: call, Result: rc}
	if n := C.gn_cuda_error_name(C.int(rc)); n != nil {
		e.Name = C.GoString(n)
	}
	return e
}

// Size is the allocation's size (whole GPU pages).
func (g *GPUMemory) Size() int {
	if g.hsa != nil {
		return int(g.hsa.len)
	}
	return int(g.m.len)
}

// DMABuf says whether the memory was exported as a dma-buf and, when
// not, why.
func (g *GPUMemory) DMABuf() (ok bool, why string) {
	if g.hsa != nil {
		return g.hsaDMABuf()
	}
	switch {
	case g.m.dmabuf_fd >= 0:
		return true, ""
	case g.m.dmabuf_supported == 0:
		return false, "the device does not export dma-bufs (CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED is 0, or the driver predates cuMemGetHandleForAddressRange)"
	default:
		return false, cudaError("cuMemGetHandleForAddressRange", int(g.m.dmabuf_result)).Error()
	}
}

// Close frees the memory, its dma-buf and the context reference. Safe to
// call twice.
func (g *GPUMemory) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.hsa != nil {
		C.gn_hsa_free(g.hsa)
		C.free(unsafe.Pointer(g.hsa))
		g.hsa = nil
		return
	}
	if g.m == nil {
		return
	}
	C.gn_cuda_free(g.m)
	C.free(unsafe.Pointer(g.m))
	g.m = nil
}

// fakeBytes is the memory as the CPU sees it: only for the tests' fake
// libcuda and libhsa-runtime64, whose device memory is host memory (a
// real GPU's is not the CPU's to touch).
func (g *GPUMemory) fakeBytes() []byte {
	if g.hsa != nil {
		return unsafe.Slice((*byte)(g.hsa.ptr), int(g.hsa.len))
	}
	return unsafe.Slice((*byte)(C.gn_ptr(g.m.dptr)), int(g.m.len))
}

// extmem is what registration needs of the memory.
func (g *GPUMemory) extmem() C.struct_gn_extmem {
	if g.hsa != nil {
		return C.struct_gn_extmem{addr: C.uint64_t(uintptr(g.hsa.ptr)), len: g.hsa.len, dmabuf_fd: g.hsa.dmabuf_fd, dmabuf_offset: g.hsa.dmabuf_offset}
	}
	return C.struct_gn_extmem{addr: g.m.dptr, len: g.m.len, dmabuf_fd: g.m.dmabuf_fd}
}

// memPath names a gn_res's registration path.
func memPath(p C.int) string {
	switch p {
	case C.GN_MEM_DMABUF:
		return PathDMABuf
	case C.GN_MEM_PEERMEM:
		return PathPeerMem
	}
	return ""
}

// dmabufRefusal says why ibv_reg_dmabuf_mr refused the dma-buf ("" when
// it was not tried or worked).
func dmabufRefusal(errno C.int) string {
	switch e := syscall.Errno(errno); e {
	case 0:
		return ""
	case syscall.ENOSYS:
		return "libibverbs.so.1 has no ibv_reg_dmabuf_mr (rdma-core before 34)"
	default:
		return fmt.Sprintf("ibv_reg_dmabuf_mr: %v (errno %d)", e, int(e))
	}
}
