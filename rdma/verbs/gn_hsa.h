// GPU memory on AMD GPUs for the probes (GPUDirect RDMA): VRAM allocated
// through ROCm's HSA runtime, loaded with dlopen like libcuda, so the
// agent has no link-time dependency on ROCm and starts anywhere.
#ifndef GN_HSA_H
#define GN_HSA_H

#include <stddef.h>
#include <stdint.h>

// gn_hsamem is one allocation in one GPU agent's VRAM pool, with its
// dma-buf when the runtime exports one. The runtime stays initialised
// (hsa_init's reference) while the memory lives.
struct gn_hsamem {
	int initialised;
	void *ptr;
	size_t len;
	// dmabuf_fd is the exported dma-buf, -1 when there is none;
	// dmabuf_offset is ptr's offset in it; dmabuf_result the
	// hsa_status_t of the export (0 when it worked), dmabuf_missing 1
	// when the runtime predates hsa_amd_portable_export_dmabuf.
	int dmabuf_fd;
	uint64_t dmabuf_offset;
	int dmabuf_result;
	int dmabuf_missing;
};

// gn_hsa_load opens the HSA runtime at path once per process (the first
// path that loads wins). 0 on success; otherwise err says why.
int gn_hsa_load(const char *path, char *err, size_t n);

// gn_hsa_alloc initialises the runtime, finds the GPU agent whose PCI
// domain:bus:device.function is domain/bdfid (bus<<8|device<<3|function,
// HSA_AMD_AGENT_INFO_BDFID's layout), picks its coarse-grained global
// (VRAM) pool, allocates len bytes (rounded up to the pool's granule) and
// exports them as a dma-buf. 0 on success; else the hsa_status_t (or -1
// when no agent or pool matched), with *stage naming the call. Nothing
// is left allocated, and the runtime is shut down again, on failure.
int gn_hsa_alloc(struct gn_hsamem *m, uint32_t domain, uint32_t bdfid, size_t len, const char **stage);

// gn_hsa_free closes the dma-buf, frees the memory and shuts the runtime
// down (drops hsa_init's reference). Safe to call again.
void gn_hsa_free(struct gn_hsamem *m);

// gn_hsa_status_string is hsa_status_string's text for a status, or
// NULL.
const char *gn_hsa_status_string(int status);

#endif
