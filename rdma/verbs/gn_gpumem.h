// GPU memory for the probes (GPUDirect RDMA): device memory allocated
// through the CUDA driver API, loaded with dlopen like libibverbs, so the
// agent has no link-time dependency on libcuda and starts anywhere.
#ifndef GN_GPUMEM_H
#define GN_GPUMEM_H

#include <stddef.h>
#include <stdint.h>

// gn_gpumem is one allocation on one GPU, with its dma-buf when the
// driver exports one.
struct gn_gpumem {
	int device;
	// ctx is the device's primary context, retained while the memory
	// lives.
	void *ctx;
	uint64_t dptr;
	size_t len;
	// dmabuf_fd is the exported dma-buf, -1 when there is none;
	// dmabuf_supported is CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED, and
	// dmabuf_result the CUresult of the export (0 when it worked or was
	// not tried).
	int dmabuf_fd;
	int dmabuf_supported;
	int dmabuf_result;
};

// gn_cuda_load opens the CUDA driver library at path once per process
// (the first path that loads wins). 0 on success; otherwise err says why.
int gn_cuda_load(const char *path, char *err, size_t n);

// gn_cuda_alloc initialises CUDA, finds the GPU by PCI bus id (or, when
// pci_bus_id is empty, by ordinal), retains its primary context,
// allocates len bytes (rounded up to 64 KiB, the GPU page) and exports
// them as a dma-buf where the device supports it. 0 on success; else the
// CUresult, with *stage naming the call. Nothing is left allocated on
// failure.
int gn_cuda_alloc(struct gn_gpumem *m, const char *pci_bus_id, int ordinal, size_t len, const char **stage);

// gn_cuda_free closes the dma-buf, frees the memory and releases the
// context. Safe to call again, and on a struct gn_cuda_alloc failed on.
void gn_cuda_free(struct gn_gpumem *m);

// gn_cuda_error_name is cuGetErrorName's name for a CUresult, or NULL.
const char *gn_cuda_error_name(int result);

// gn_ptr turns a device address into a pointer: only the test fake's
// "device memory" may be touched through it.
static inline void *gn_ptr(uint64_t addr) { return (void *)(uintptr_t)addr; }

#endif
