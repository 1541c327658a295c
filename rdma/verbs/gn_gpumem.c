#include "gn_gpumem.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

// From the CUDA driver API (cuda.h), which is not needed to build: the
// values are fixed by its ABI.
#define GN_CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED 124
#define GN_CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD 1
// The GPU page: dma-buf export wants ranges aligned to it.
#define GN_GPU_PAGE (64 * 1024)

typedef int cu_result;

static struct {
	cu_result (*init)(unsigned int);
	cu_result (*device_get)(int *, int);
	cu_result (*device_get_by_pci_bus_id)(int *, const char *);
	cu_result (*device_get_attribute)(int *, int, int);
	cu_result (*primary_ctx_retain)(void **, int);
	cu_result (*primary_ctx_release)(int);
	cu_result (*ctx_set_current)(void *);
	cu_result (*mem_alloc)(uint64_t *, size_t);
	cu_result (*mem_free)(uint64_t);
	// Optional (CUDA 11.7+): without it there is no dma-buf.
	cu_result (*get_handle_for_address_range)(void *, uint64_t, size_t, int, unsigned long long);
	cu_result (*get_error_name)(cu_result, const char **);
} cu;

static pthread_mutex_t cu_mu = PTHREAD_MUTEX_INITIALIZER;
static int cu_loaded;

// cu_sym resolves the versioned name the CUDA headers map the call to
// (cuMemAlloc is cuMemAlloc_v2 since CUDA 3.2), then the plain one.
static void *cu_sym(void *h, const char *name, const char *v2) {
	void *p = v2 ? dlsym(h, v2) : NULL;
	return p ? p : dlsym(h, name);
}

int gn_cuda_load(const char *path, char *err, size_t n) {
	pthread_mutex_lock(&cu_mu);
	if (cu_loaded) {
		pthread_mutex_unlock(&cu_mu);
		return 0;
	}
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		const char *e = dlerror();
		snprintf(err, n, "%s", e ? e : "dlopen failed");
		pthread_mutex_unlock(&cu_mu);
		return -1;
	}
#define CU_RESOLVE(field, name, v2)                                           \
	do {                                                                  \
		*(void **)(&cu.field) = cu_sym(h, name, v2);                  \
		if (!cu.field) {                                              \
			snprintf(err, n, "%s lacks %s", path, name);          \
			memset(&cu, 0, sizeof cu);                            \
			dlclose(h);                                           \
			pthread_mutex_unlock(&cu_mu);                         \
			return -1;                                            \
		}                                                             \
	} while (0)
	CU_RESOLVE(init, "cuInit", NULL);
	CU_RESOLVE(device_get, "cuDeviceGet", NULL);
	CU_RESOLVE(device_get_by_pci_bus_id, "cuDeviceGetByPCIBusId", NULL);
	CU_RESOLVE(device_get_attribute, "cuDeviceGetAttribute", NULL);
	CU_RESOLVE(primary_ctx_retain, "cuDevicePrimaryCtxRetain", NULL);
	CU_RESOLVE(primary_ctx_release, "cuDevicePrimaryCtxRelease", "cuDevicePrimaryCtxRelease_v2");
	CU_RESOLVE(ctx_set_current, "cuCtxSetCurrent", NULL);
	CU_RESOLVE(mem_alloc, "cuMemAlloc", "cuMemAlloc_v2");
	CU_RESOLVE(mem_free, "cuMemFree", "cuMemFree_v2");
	CU_RESOLVE(get_error_name, "cuGetErrorName", NULL);
#undef CU_RESOLVE
	*(void **)(&cu.get_handle_for_address_range) = dlsym(h, "cuMemGetHandleForAddressRange");
	cu_loaded = 1;
	pthread_mutex_unlock(&cu_mu);
	return 0;
}

const char *gn_cuda_error_name(int result) {
	const char *s = NULL;
	if (!cu_loaded || cu.get_error_name(result, &s) != 0)
		return NULL;
	return s;
}

void gn_cuda_free(struct gn_gpumem *m) {
	if (m->dmabuf_fd >= 0)
		close(m->dmabuf_fd);
	m->dmabuf_fd = -1;
	if (m->dptr) {
		// The context must be current on this thread to free.
		cu.ctx_set_current(m->ctx);
		cu.mem_free(m->dptr);
		m->dptr = 0;
	}
	if (m->ctx) {
		cu.ctx_set_current(NULL);
		cu.primary_ctx_release(m->device);
		m->ctx = NULL;
	}
}

int gn_cuda_alloc(struct gn_gpumem *m, const char *pci_bus_id, int ordinal, size_t len, const char **stage) {
	memset(m, 0, sizeof *m);
	m->dmabuf_fd = -1;
	if (!cu_loaded) {
		*stage = "load the CUDA driver";
		return -1;
	}
	cu_result rc;
	if ((rc = cu.init(0)) != 0) {
		*stage = "cuInit";
		return rc;
	}
	if (pci_bus_id && *pci_bus_id) {
		if ((rc = cu.device_get_by_pci_bus_id(&m->device, pci_bus_id)) != 0) {
			*stage = "cuDeviceGetByPCIBusId";
			return rc;
		}
	} else if ((rc = cu.device_get(&m->device, ordinal)) != 0) {
		*stage = "cuDeviceGet";
		return rc;
	}
	if ((rc = cu.primary_ctx_retain(&m->ctx, m->device)) != 0) {
		*stage = "cuDevicePrimaryCtxRetain";
		m->ctx = NULL;
		return rc;
	}
	if ((rc = cu.ctx_set_current(m->ctx)) != 0) {
		*stage = "cuCtxSetCurrent";
		gn_cuda_free(m);
		return rc;
	}
	m->len = (len + GN_GPU_PAGE - 1) / GN_GPU_PAGE * GN_GPU_PAGE;
	if ((rc = cu.mem_alloc(&m->dptr, m->len)) != 0) {
		*stage = "cuMemAlloc";
		m->dptr = 0;
		gn_cuda_free(m);
		return rc;
	}
	int supported = 0;
	if ((rc = cu.device_get_attribute(&supported, GN_CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED, m->device)) != 0) {
		*stage = "cuDeviceGetAttribute(DMA_BUF_SUPPORTED)";
		gn_cuda_free(m);
		return rc;
	}
	m->dmabuf_supported = supported && cu.get_handle_for_address_range;
	if (m->dmabuf_supported) {
		int fd = -1;
		// A failed export is not fatal: registration falls back to the
		// device pointer (nvidia_peermem), and the result says why.
		m->dmabuf_result = cu.get_handle_for_address_range(&fd, m->dptr, m->len, GN_CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD, 0);
		if (m->dmabuf_result == 0)
			m->dmabuf_fd = fd;
	}
	// Leave no context current on this (Go-owned) thread.
	cu.ctx_set_current(NULL);
	return 0;
}
