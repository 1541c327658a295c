// A stand-in libhsa-runtime64.so.1 for the AMD GPU memory tests: written
// here from ROCm's hsa.h and hsa_ext_amd.h (the calls' signatures and
// the status, attribute, segment and flag values), no AMD code. Agent 0
// is a CPU; then one GPU agent per configured bus id, each with a group
// segment pool, a fine-grained global pool and the coarse-grained global
// (VRAM) pool. "VRAM" is ordinary shared memory from a memfd, so an RDMA
// device can register it by address as amdgpu's peer-memory client lets
// it register real VRAM; its dma-buf is a real one from /dev/udmabuf
// where the kernel has it, else a duplicate of the memfd, and the log
// says which.
//
// Controls, read on every call:
//   GN_FAKE_HSA_FAIL    a call that fails: its name, or for info queries
//                       the name with the attribute in parentheses, as
//                       the agent's errors name them
//   GN_FAKE_HSA_DEVICES comma-separated PCI bus ids (default one GPU,
//                       0000:c1:00.0)
//   GN_FAKE_HSA_NOVRAM  "1": the VRAM pool does not allow allocation
//   GN_FAKE_HSA_LOG     a file each call appends a line to
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/udmabuf.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

typedef int hsa_status_t;
typedef struct {
	uint64_t handle;
} hsa_agent_t;
typedef struct {
	uint64_t handle;
} hsa_amd_memory_pool_t;

#define HSA_STATUS_SUCCESS 0x0
#define HSA_STATUS_INFO_BREAK 0x1
#define HSA_STATUS_ERROR 0x1000
#define HSA_STATUS_ERROR_INVALID_ARGUMENT 0x1001
#define HSA_STATUS_ERROR_INVALID_ALLOCATION 0x1003
#define HSA_STATUS_ERROR_INVALID_AGENT 0x1004
#define HSA_STATUS_ERROR_OUT_OF_RESOURCES 0x1008
#define HSA_STATUS_ERROR_NOT_INITIALIZED 0x100B

#define MAX_DEVICES 16
#define MAX_ALLOCS 64
// Pools per GPU agent: group segment, fine-grained global, VRAM.
#define POOLS 3

static int refs;
static struct {
	void *p;
	size_t len;
	int memfd;
} allocs[MAX_ALLOCS];

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...) {
	const char *path = getenv("GN_FAKE_HSA_LOG");
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
	const char *f = getenv("GN_FAKE_HSA_FAIL");
	if (!f || strcmp(f, call) != 0)
		return 0;
	logf_("failed %s", call);
	return 1;
}

static int devices(char ids[MAX_DEVICES][32]) {
	const char *env = getenv("GN_FAKE_HSA_DEVICES");
	char buf[MAX_DEVICES * 32];
	snprintf(buf, sizeof buf, "%s", env && *env ? env : "0000:c1:00.0");
	int n = 0;
	for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok && n < MAX_DEVICES; tok = strtok_r(NULL, ",", &save))
		snprintf(ids[n++], 32, "%s", tok);
	return n;
}

hsa_status_t hsa_init(void) {
	logf_("hsa_init");
	if (failing("hsa_init"))
		return HSA_STATUS_ERROR_OUT_OF_RESOURCES;
	refs++;
	return HSA_STATUS_SUCCESS;
}

hsa_status_t hsa_shut_down(void) {
	logf_("hsa_shut_down");
	if (refs == 0)
		return HSA_STATUS_ERROR_NOT_INITIALIZED;
	refs--;
	return HSA_STATUS_SUCCESS;
}

// Agent handles: 1 is the CPU, 2+i GPU i.
hsa_status_t hsa_iterate_agents(hsa_status_t (*cb)(hsa_agent_t, void *), void *data) {
	char ids[MAX_DEVICES][32];
	logf_("hsa_iterate_agents");
	if (!refs)
		return HSA_STATUS_ERROR_NOT_INITIALIZED;
	if (failing("hsa_iterate_agents"))
		return HSA_STATUS_ERROR;
	int n = devices(ids);
	for (int i = -1; i < n; i++) {
		hsa_status_t rc = cb((hsa_agent_t){.handle = (uint64_t)(i + 2)}, data);
		if (rc != HSA_STATUS_SUCCESS)
			return rc;
	}
	return HSA_STATUS_SUCCESS;
}

hsa_status_t hsa_agent_get_info(hsa_agent_t agent, int attr, void *v) {
	char ids[MAX_DEVICES][32];
	int n = devices(ids), gpu = (int)agent.handle - 2;
	if (!refs)
		return HSA_STATUS_ERROR_NOT_INITIALIZED;
	if (gpu < -1 || gpu >= n)
		return HSA_STATUS_ERROR_INVALID_AGENT;
	unsigned dom = 0, bus = 0, dev = 0, fn = 0;
	if (gpu >= 0)
		sscanf(ids[gpu], "%x:%x:%x.%x", &dom, &bus, &dev, &fn);
	switch (attr) {
	case 17: // HSA_AGENT_INFO_DEVICE
		if (failing("hsa_agent_get_info(HSA_AGENT_INFO_DEVICE)"))
			return HSA_STATUS_ERROR_INVALID_AGENT;
		*(uint32_t *)v = gpu >= 0 ? 1 : 0; // HSA_DEVICE_TYPE_GPU, _CPU
		return HSA_STATUS_SUCCESS;
	case 0xA006: // HSA_AMD_AGENT_INFO_BDFID
		if (failing("hsa_agent_get_info(HSA_AMD_AGENT_INFO_BDFID)"))
			return HSA_STATUS_ERROR_INVALID_ARGUMENT;
		*(uint32_t *)v = bus << 8 | dev << 3 | fn;
		return HSA_STATUS_SUCCESS;
	case 0xA00F: // HSA_AMD_AGENT_INFO_DOMAIN
		if (failing("hsa_agent_get_info(HSA_AMD_AGENT_INFO_DOMAIN)"))
			return HSA_STATUS_ERROR_INVALID_ARGUMENT;
		*(uint32_t *)v = dom;
		return HSA_STATUS_SUCCESS;
	}
	return HSA_STATUS_ERROR_INVALID_ARGUMENT;
}

// Pool handles: agent handle * 16 + pool number.
hsa_status_t hsa_amd_agent_iterate_memory_pools(hsa_agent_t agent, hsa_status_t (*cb)(hsa_amd_memory_pool_t, void *), void *data) {
	logf_("hsa_amd_agent_iterate_memory_pools %llu", (unsigned long long)agent.handle);
	if (!refs)
		return HSA_STATUS_ERROR_NOT_INITIALIZED;
	if (failing("hsa_amd_agent_iterate_memory_pools"))
		return HSA_STATUS_ERROR_INVALID_AGENT;
	for (int i = 0; i < POOLS; i++) {
		hsa_status_t rc = cb((hsa_amd_memory_pool_t){.handle = agent.handle * 16 + (uint64_t)i}, data);
		if (rc != HSA_STATUS_SUCCESS)
			return rc;
	}
	return HSA_STATUS_SUCCESS;
}

hsa_status_t hsa_amd_memory_pool_get_info(hsa_amd_memory_pool_t pool, int attr, void *v) {
	int kind = (int)(pool.handle % 16);
	const char *novram = getenv("GN_FAKE_HSA_NOVRAM");
	if (!refs)
		return HSA_STATUS_ERROR_NOT_INITIALIZED;
	switch (attr) {
	case 0: // HSA_AMD_MEMORY_POOL_INFO_SEGMENT
		if (failing("hsa_amd_memory_pool_get_info(HSA_AMD_MEMORY_POOL_INFO_SEGMENT)"))
			return HSA_STATUS_ERROR_INVALID_ARGUMENT;
		*(uint32_t *)v = kind == 0 ? 3 : 0; // HSA_AMD_SEGMENT_GROUP, _GLOBAL
		return HSA_STATUS_SUCCESS;
	case 1: // HSA_AMD_MEMORY_POOL_INFO_GLOBAL_FLAGS
		if (failing("hsa_amd_memory_pool_get_info(HSA_AMD_MEMORY_POOL_INFO_GLOBAL_FLAGS)"))
			return HSA_STATUS_ERROR_INVALID_ARGUMENT;
		*(uint32_t *)v = kind == 1 ? 2 : 4; // FINE_GRAINED, COARSE_GRAINED
		return HSA_STATUS_SUCCESS;
	case 5: // HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_ALLOWED
		if (failing("hsa_amd_memory_pool_get_info(HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_ALLOWED)"))
			return HSA_STATUS_ERROR_INVALID_ARGUMENT;
		*(bool *)v = kind != 0 && !(kind == 2 && novram && strcmp(novram, "1") == 0);
		return HSA_STATUS_SUCCESS;
	case 6: // HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_GRANULE
		if (failing("hsa_amd_memory_pool_get_info(HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_GRANULE)"))
			return HSA_STATUS_ERROR_INVALID_ARGUMENT;
		*(size_t *)v = 4096;
		return HSA_STATUS_SUCCESS;
	}
	return HSA_STATUS_ERROR_INVALID_ARGUMENT;
}

hsa_status_t hsa_amd_memory_pool_allocate(hsa_amd_memory_pool_t pool, size_t len, uint32_t flags, void **p) {
	logf_("hsa_amd_memory_pool_allocate %llu %zu %u", (unsigned long long)pool.handle, len, flags);
	if (!refs)
		return HSA_STATUS_ERROR_NOT_INITIALIZED;
	if (failing("hsa_amd_memory_pool_allocate"))
		return HSA_STATUS_ERROR_OUT_OF_RESOURCES;
	if (pool.handle % 16 != 2)
		return HSA_STATUS_ERROR_INVALID_ALLOCATION;
	for (int i = 0; i < MAX_ALLOCS; i++) {
		if (allocs[i].p)
			continue;
		int fd = memfd_create("fake-hsa", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (fd < 0 || ftruncate(fd, (off_t)len) != 0 || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0) {
			if (fd >= 0)
				close(fd);
			return HSA_STATUS_ERROR_OUT_OF_RESOURCES;
		}
		void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (m == MAP_FAILED) {
			close(fd);
			return HSA_STATUS_ERROR_OUT_OF_RESOURCES;
		}
		allocs[i].p = m;
		allocs[i].len = len;
		allocs[i].memfd = fd;
		*p = m;
		return HSA_STATUS_SUCCESS;
	}
	return HSA_STATUS_ERROR_OUT_OF_RESOURCES;
}

hsa_status_t hsa_amd_memory_pool_free(void *p) {
	logf_("hsa_amd_memory_pool_free");
	for (int i = 0; i < MAX_ALLOCS; i++) {
		if (allocs[i].p == p) {
			munmap(allocs[i].p, allocs[i].len);
			close(allocs[i].memfd);
			allocs[i].p = NULL;
			return HSA_STATUS_SUCCESS;
		}
	}
	return HSA_STATUS_ERROR_INVALID_ARGUMENT;
}

hsa_status_t hsa_amd_portable_export_dmabuf(const void *p, size_t len, int *fd, uint64_t *offset) {
	logf_("hsa_amd_portable_export_dmabuf %zu", len);
	if (!refs)
		return HSA_STATUS_ERROR_NOT_INITIALIZED;
	if (failing("hsa_amd_portable_export_dmabuf"))
		return HSA_STATUS_ERROR_INVALID_AGENT;
	for (int i = 0; i < MAX_ALLOCS; i++) {
		if (allocs[i].p != p || len > allocs[i].len)
			continue;
		*offset = 0;
		int dev = open("/dev/udmabuf", O_RDWR | O_CLOEXEC);
		if (dev >= 0) {
			struct udmabuf_create c = {.memfd = (uint32_t)allocs[i].memfd, .flags = UDMABUF_FLAGS_CLOEXEC, .offset = 0, .size = len};
			int d = ioctl(dev, UDMABUF_CREATE, &c);
			close(dev);
			if (d < 0)
				return HSA_STATUS_ERROR;
			logf_("dma-buf udmabuf");
			*fd = d;
			return HSA_STATUS_SUCCESS;
		}
		logf_("dma-buf memfd-standin (/dev/udmabuf: %s)", strerror(errno));
		*fd = fcntl(allocs[i].memfd, F_DUPFD_CLOEXEC, 0);
		return HSA_STATUS_SUCCESS;
	}
	return HSA_STATUS_ERROR_INVALID_ARGUMENT;
}

hsa_status_t hsa_amd_portable_close_dmabuf(int fd) {
	logf_("hsa_amd_portable_close_dmabuf");
	return close(fd) == 0 ? HSA_STATUS_SUCCESS : HSA_STATUS_ERROR_INVALID_ARGUMENT;
}

hsa_status_t hsa_status_string(hsa_status_t s, const char **out) {
	static const struct {
		hsa_status_t s;
		const char *text;
	} texts[] = {
		{HSA_STATUS_ERROR, "HSA_STATUS_ERROR: generic error"},
		{HSA_STATUS_ERROR_INVALID_ARGUMENT, "HSA_STATUS_ERROR_INVALID_ARGUMENT: bad argument"},
		{HSA_STATUS_ERROR_INVALID_ALLOCATION, "HSA_STATUS_ERROR_INVALID_ALLOCATION: bad allocation"},
		{HSA_STATUS_ERROR_INVALID_AGENT, "HSA_STATUS_ERROR_INVALID_AGENT: bad agent"},
		{HSA_STATUS_ERROR_OUT_OF_RESOURCES, "HSA_STATUS_ERROR_OUT_OF_RESOURCES: out of resources"},
		{HSA_STATUS_ERROR_NOT_INITIALIZED, "HSA_STATUS_ERROR_NOT_INITIALIZED: runtime not initialised"},
	};
	if (failing("hsa_status_string"))
		return HSA_STATUS_ERROR_INVALID_ARGUMENT;
	for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
		if (texts[i].s == s) {
			*out = texts[i].text;
			return HSA_STATUS_SUCCESS;
		}
	}
	return HSA_STATUS_ERROR_INVALID_ARGUMENT;
}
