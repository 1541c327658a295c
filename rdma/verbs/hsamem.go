package verbs

/*
#include <stdlib.h>
#include "gn_hsa.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"
)

// HSALibrary is ROCm's HSA runtime, which AMD GPU memory comes from.
const HSALibrary = "libhsa-runtime64.so.1"

// ErrNoHSA: the HSA runtime could not be loaded.
var ErrNoHSA = errors.New("ROCm HSA runtime not available")

// HSAError is a failed HSA runtime call, or (Status -1) a search that
// found no GPU agent or memory pool.
type HSAError struct {
	Call   string
	Status int
	// Text is hsa_status_string's.
	Text string
}

func (e *HSAError) Error() string {
	if e.Status == -1 {
		return e.Call
	}
	return fmt.Sprintf("%s: %s (hsa_status_t %#x)", e.Call, cmpOr(e.Text, "unknown error"), e.Status)
}

// LoadHSA opens the HSA runtime at path (HSALibrary, or a full path)
// once per process: later calls keep the first library that loaded.
func LoadHSA(path string) error {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var buf [512]C.char
	if C.gn_hsa_load(cpath, &buf[0], C.size_t(len(buf))) != 0 {
		return fmt.Errorf("%w: %s", ErrNoHSA, C.GoString(&buf[0]))
	}
	return nil
}

// AMDGPUMemoryConfig says where and how much.
type AMDGPUMemoryConfig struct {
	// Library is the HSA runtime (HSALibrary when empty).
	Library string
	// PCIBusID ("0000:c1:00.0") picks the GPU agent.
	PCIBusID string
	// Size is rounded up to the pool's allocation granule.
	Size int
}

// parseBDF splits a PCI address into HSA's domain and BDF id
// (bus<<8 | device<<3 | function, HSA_AMD_AGENT_INFO_BDFID's layout).
func parseBDF(bus string) (domain, bdfid uint32, err error) {
	var d, b, dev, fn uint32
	if n, _ := fmt.Sscanf(bus, "%x:%x:%x.%x", &d, &b, &dev, &fn); n != 4 || b > 0xff || dev > 0x1f || fn > 7 {
		return 0, 0, fmt.Errorf("PCI bus id %q: want domain:bus:device.function", bus)
	}
	return d, b<<8 | dev<<3 | fn, nil
}

// AllocAMDGPUMemory allocates VRAM on the AMD GPU at cfg.PCIBusID
// through the HSA runtime and exports it as a dma-buf where the runtime
// can. Nothing stays allocated, and the runtime is shut down again, when
// it fails.
func AllocAMDGPUMemory(cfg AMDGPUMemoryConfig) (*GPUMemory, error) {
	if cfg.Size < 1 || cfg.Size > MaxGPUMemory {
		return nil, fmt.Errorf("GPU memory size %d out of range 1..%d", cfg.Size, MaxGPUMemory)
	}
	domain, bdfid, err := parseBDF(cfg.PCIBusID)
	if err != nil {
		return nil, fmt.Errorf("GPU memory: %w", err)
	}
	if err := LoadHSA(cmpOr(cfg.Library, HSALibrary)); err != nil {
		return nil, err
	}
	m := (*C.struct_gn_hsamem)(C.calloc(1, C.size_t(unsafe.Sizeof(C.struct_gn_hsamem{}))))
	if m == nil {
		return nil, errors.New("allocate GPU memory state: out of memory")
	}
	var stage *C.char
	if rc := C.gn_hsa_alloc(m, C.uint32_t(domain), C.uint32_t(bdfid), C.size_t(cfg.Size), &stage); rc != 0 {
		C.free(unsafe.Pointer(m))
		return nil, fmt.Errorf("GPU memory on %s: %w", cfg.PCIBusID, hsaError(C.GoString(stage), int(rc)))
	}
	return &GPUMemory{hsa: m, gpu: cfg.PCIBusID}, nil
}

func hsaError(call string, status int) error {
	e := &HSAError{Call: call, Status: status}
	if status != -1 {
		if s := C.gn_hsa_status_string(C.int(status)); s != nil {
			e.Text = C.GoString(s)
		}
	}
	return e
}

// hsaDMABuf is DMABuf for ROCm memory.
func (g *GPUMemory) hsaDMABuf() (ok bool, why string) {
	switch {
	case g.hsa.dmabuf_fd >= 0:
		return true, ""
	case g.hsa.dmabuf_missing != 0:
		return false, "the HSA runtime has no hsa_amd_portable_export_dmabuf (an older ROCm)"
	default:
		return false, hsaError("hsa_amd_portable_export_dmabuf", int(g.hsa.dmabuf_result)).Error()
	}
}
