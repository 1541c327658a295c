// A stand-in libcuda.so.1 for the GPU memory tests: written here from the
// CUDA driver API reference (the calls' signatures and the CUresult,
// attribute and handle-type values), no NVIDIA code. "Device memory" is
// ordinary shared memory from a memfd, so an RDMA device can register it
// by address as nvidia_peermem lets it register real device memory; its
// dma-buf is a real one from /dev/udmabuf where the kernel has it, else a
// duplicate of the memfd (not a dma-buf: the kernel would refuse it as
// one), and the log says which.
//
// Controls, read on every call:
//   GN_FAKE_CUDA_FAIL    the name of a call that fails
//   GN_FAKE_CUDA_DEVICES comma-separated PCI bus ids (default one GPU,
//                        0000:17:00.0)
//   GN_FAKE_CUDA_DMABUF  "0": the device reports no dma-buf support
//   GN_FAKE_CUDA_LOG     a file each call appends a line to
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/udmabuf.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct fake_ctx *CUcontext;

#define CUDA_SUCCESS 0
#define CUDA_ERROR_INVALID_VALUE 1
#define CUDA_ERROR_OUT_OF_MEMORY 2
#define CUDA_ERROR_NOT_INITIALIZED 3
#define CUDA_ERROR_NO_DEVICE 100
#define CUDA_ERROR_INVALID_DEVICE 101
#define CUDA_ERROR_INVALID_CONTEXT 201
#define CUDA_ERROR_NOT_SUPPORTED 801

struct fake_ctx {
	int device;
	int refs;
};

#define MAX_DEVICES 16
#define MAX_ALLOCS 64

static struct fake_ctx ctxs[MAX_DEVICES];
static __thread CUcontext current;
static int initialised;
static struct {
	void *p;
	size_t len;
	int memfd;
} allocs[MAX_ALLOCS];

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...) {
	const char *path = getenv("GN_FAKE_CUDA_LOG");
	if (!path || !*path)
		return;
	FILE *f = fopen(path, "a");
	if (!f)
		return;
	va_list ap;
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fputc('\n', f);
	fclose(f);
}

static int failing(const char *call) {
	const char *f = getenv("GN_FAKE_CUDA_FAIL");
	if (!f || strcmp(f, call) != 0)
		return 0;
	logf_("failed %s", call);
	return 1;
}

// devices fills ids with the configured bus ids and returns how many.
static int devices(char ids[MAX_DEVICES][32]) {
	const char *env = getenv("GN_FAKE_CUDA_DEVICES");
	char buf[MAX_DEVICES * 32];
	snprintf(buf, sizeof buf, "%s", env && *env ? env : "0000:17:00.0");
	int n = 0;
	for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok && n < MAX_DEVICES; tok = strtok_r(NULL, ",", &save))
		snprintf(ids[n++], 32, "%s", tok);
	return n;
}

CUresult cuInit(unsigned int flags) {
	logf_("cuInit %u", flags);
	if (failing("cuInit"))
		return CUDA_ERROR_NO_DEVICE;
	initialised = 1;
	return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice *dev, int ordinal) {
	char ids[MAX_DEVICES][32];
	logf_("cuDeviceGet %d", ordinal);
	if (!initialised)
		return CUDA_ERROR_NOT_INITIALIZED;
	if (failing("cuDeviceGet") || ordinal < 0 || ordinal >= devices(ids))
		return CUDA_ERROR_INVALID_DEVICE;
	*dev = ordinal;
	return CUDA_SUCCESS;
}

CUresult cuDeviceGetByPCIBusId(CUdevice *dev, const char *bus) {
	char ids[MAX_DEVICES][32];
	logf_("cuDeviceGetByPCIBusId %s", bus);
	if (!initialised)
		return CUDA_ERROR_NOT_INITIALIZED;
	if (failing("cuDeviceGetByPCIBusId"))
		return CUDA_ERROR_INVALID_DEVICE;
	int n = devices(ids);
	for (int i = 0; i < n; i++) {
		if (strcasecmp(ids[i], bus) == 0) {
			*dev = i;
			return CUDA_SUCCESS;
		}
	}
	return CUDA_ERROR_INVALID_DEVICE;
}

CUresult cuDeviceGetAttribute(int *v, int attr, CUdevice dev) {
	logf_("cuDeviceGetAttribute %d %d", attr, dev);
	if (failing("cuDeviceGetAttribute"))
		return CUDA_ERROR_INVALID_VALUE;
	if (attr != 124) // CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED: the only one asked
		return CUDA_ERROR_INVALID_VALUE;
	const char *d = getenv("GN_FAKE_CUDA_DMABUF");
	*v = !(d && strcmp(d, "0") == 0);
	return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev) {
	logf_("cuDevicePrimaryCtxRetain %d", dev);
	if (failing("cuDevicePrimaryCtxRetain"))
		return CUDA_ERROR_OUT_OF_MEMORY;
	if (dev < 0 || dev >= MAX_DEVICES)
		return CUDA_ERROR_INVALID_DEVICE;
	ctxs[dev].device = dev;
	ctxs[dev].refs++;
	*ctx = &ctxs[dev];
	return CUDA_SUCCESS;
}

// Only the _v2 name, as drivers since CUDA 11 export it for the headers.
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev) {
	logf_("cuDevicePrimaryCtxRelease %d", dev);
	if (dev < 0 || dev >= MAX_DEVICES || ctxs[dev].refs == 0)
		return CUDA_ERROR_INVALID_CONTEXT;
	ctxs[dev].refs--;
	return CUDA_SUCCESS;
}

CUresult cuCtxSetCurrent(CUcontext ctx) {
	logf_("cuCtxSetCurrent %s", ctx ? "ctx" : "NULL");
	if (ctx && failing("cuCtxSetCurrent"))
		return CUDA_ERROR_INVALID_CONTEXT;
	current = ctx;
	return CUDA_SUCCESS;
}

CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t len) {
	logf_("cuMemAlloc %zu", len);
	if (!current)
		return CUDA_ERROR_INVALID_CONTEXT;
	if (failing("cuMemAlloc"))
		return CUDA_ERROR_OUT_OF_MEMORY;
	for (int i = 0; i < MAX_ALLOCS; i++) {
		if (allocs[i].p)
			continue;
		int fd = memfd_create("fake-cuda", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (fd < 0 || ftruncate(fd, (off_t)len) != 0 || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0) {
			if (fd >= 0)
				close(fd);
			return CUDA_ERROR_OUT_OF_MEMORY;
		}
		void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (m == MAP_FAILED) {
			close(fd);
			return CUDA_ERROR_OUT_OF_MEMORY;
		}
		allocs[i].p = m;
		allocs[i].len = len;
		allocs[i].memfd = fd;
		*p = (CUdeviceptr)(uintptr_t)m;
		return CUDA_SUCCESS;
	}
	return CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult cuMemFree_v2(CUdeviceptr p) {
	logf_("cuMemFree");
	if (!current)
		return CUDA_ERROR_INVALID_CONTEXT;
	for (int i = 0; i < MAX_ALLOCS; i++) {
		if (allocs[i].p == (void *)(uintptr_t)p) {
			munmap(allocs[i].p, allocs[i].len);
			close(allocs[i].memfd);
			allocs[i].p = NULL;
			return CUDA_SUCCESS;
		}
	}
	return CUDA_ERROR_INVALID_VALUE;
}

CUresult cuMemGetHandleForAddressRange(void *handle, CUdeviceptr p, size_t len, int type, unsigned long long flags) {
	logf_("cuMemGetHandleForAddressRange %zu %d %llu", len, type, flags);
	if (failing("cuMemGetHandleForAddressRange"))
		return CUDA_ERROR_NOT_SUPPORTED;
	if (type != 1) // CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD
		return CUDA_ERROR_INVALID_VALUE;
	for (int i = 0; i < MAX_ALLOCS; i++) {
		if (allocs[i].p != (void *)(uintptr_t)p || len > allocs[i].len)
			continue;
		int dev = open("/dev/udmabuf", O_RDWR | O_CLOEXEC);
		if (dev >= 0) {
			struct udmabuf_create c = {.memfd = (uint32_t)allocs[i].memfd, .flags = UDMABUF_FLAGS_CLOEXEC, .offset = 0, .size = len};
			int fd = ioctl(dev, UDMABUF_CREATE, &c);
			close(dev);
			if (fd < 0)
				return CUDA_ERROR_NOT_SUPPORTED;
			logf_("dma-buf udmabuf");
			*(int *)handle = fd;
			return CUDA_SUCCESS;
		}
		logf_("dma-buf memfd-standin (/dev/udmabuf: %s)", strerror(errno));
		*(int *)handle = fcntl(allocs[i].memfd, F_DUPFD_CLOEXEC, 0);
		return CUDA_SUCCESS;
	}
	return CUDA_ERROR_INVALID_VALUE;
}

CUresult cuGetErrorName(CUresult r, const char **s) {
	static const struct {
		CUresult r;
		const char *n;
	} names[] = {
		{CUDA_SUCCESS, "CUDA_SUCCESS"},
		{CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE"},
		{CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY"},
		{CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED"},
		{CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE"},
		{CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE"},
		{CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT"},
		{CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED"},
	};
	if (failing("cuGetErrorName"))
		return CUDA_ERROR_INVALID_VALUE;
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		if (names[i].r == r) {
			*s = names[i].n;
			return CUDA_SUCCESS;
		}
	}
	return CUDA_ERROR_INVALID_VALUE;
}
