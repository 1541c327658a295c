#include "gn_hsa.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

// From ROCm's hsa.h and hsa_ext_amd.h (ROCR-Runtime), which are not
// needed to build: the values are fixed by the runtime's ABI.
#define GN_HSA_STATUS_SUCCESS 0
#define GN_HSA_STATUS_INFO_BREAK 0x1
#define GN_HSA_AGENT_INFO_DEVICE 17
#define GN_HSA_DEVICE_TYPE_GPU 1
#define GN_HSA_AMD_AGENT_INFO_BDFID 0xA006
#define GN_HSA_AMD_AGENT_INFO_DOMAIN 0xA00F
#define GN_HSA_AMD_SEGMENT_GLOBAL 0
#define GN_HSA_AMD_MEMORY_POOL_INFO_SEGMENT 0
#define GN_HSA_AMD_MEMORY_POOL_INFO_GLOBAL_FLAGS 1
#define GN_HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_ALLOWED 5
#define GN_HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_GRANULE 6
#define GN_HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_FINE_GRAINED 2

typedef int hsa_status;
// hsa_agent_t and hsa_amd_memory_pool_t are structs of one uint64_t
// handle, passed by value.
typedef struct {
	uint64_t handle;
} hsa_handle;

static struct {
	hsa_status (*init)(void);
	hsa_status (*shut_down)(void);
	hsa_status (*iterate_agents)(hsa_status (*)(hsa_handle, void *), void *);
	hsa_status (*agent_get_info)(hsa_handle, int, void *);
	hsa_status (*iterate_pools)(hsa_handle, hsa_status (*)(hsa_handle, void *), void *);
	hsa_status (*pool_get_info)(hsa_handle, int, void *);
	hsa_status (*pool_allocate)(hsa_handle, size_t, uint32_t, void **);
	hsa_status (*pool_free)(void *);
	hsa_status (*status_string)(hsa_status, const char **);
	// Optional (newer runtimes only): without them there is no dma-buf.
	hsa_status (*export_dmabuf)(const void *, size_t, int *, uint64_t *);
	hsa_status (*close_dmabuf)(int);
} hsa;

static pthread_mutex_t hsa_mu = PTHREAD_MUTEX_INITIALIZER;
static int hsa_loaded;

int gn_hsa_load(const char *path, char *err, size_t n) {
	pthread_mutex_lock(&hsa_mu);
	if (hsa_loaded) {
		pthread_mutex_unlock(&hsa_mu);
		return 0;
	}
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		const char *e = dlerror();
		snprintf(err, n, "%s", e ? e : "dlopen failed");
		pthread_mutex_unlock(&hsa_mu);
		return -1;
	}
#define HSA_RESOLVE(field, name)                                              \
	do {                                                                  \
		*(void **)(&hsa.field) = dlsym(h, name);                      \
		if (!hsa.field) {                                             \
			snprintf(err, n, "%s lacks %s", path, name);          \
			memset(&hsa, 0, sizeof hsa);                          \
			dlclose(h);                                           \
			pthread_mutex_unlock(&hsa_mu);                        \
			return -1;                                            \
		}                                                             \
	} while (0)
	HSA_RESOLVE(init, "hsa_init");
	HSA_RESOLVE(shut_down, "hsa_shut_down");
	HSA_RESOLVE(iterate_agents, "hsa_iterate_agents");
	HSA_RESOLVE(agent_get_info, "hsa_agent_get_info");
	HSA_RESOLVE(iterate_pools, "hsa_amd_agent_iterate_memory_pools");
	HSA_RESOLVE(pool_get_info, "hsa_amd_memory_pool_get_info");
	HSA_RESOLVE(pool_allocate, "hsa_amd_memory_pool_allocate");
	HSA_RESOLVE(pool_free, "hsa_amd_memory_pool_free");
	HSA_RESOLVE(status_string, "hsa_status_string");
#undef HSA_RESOLVE
	*(void **)(&hsa.export_dmabuf) = dlsym(h, "hsa_amd_portable_export_dmabuf");
	*(void **)(&hsa.close_dmabuf) = dlsym(h, "hsa_amd_portable_close_dmabuf");
	if (!hsa.export_dmabuf || !hsa.close_dmabuf)
		hsa.export_dmabuf = NULL, hsa.close_dmabuf = NULL;
	hsa_loaded = 1;
	pthread_mutex_unlock(&hsa_mu);
	return 0;
}

const char *gn_hsa_status_string(int status) {
	const char *s = NULL;
	if (!hsa_loaded || hsa.status_string(status, &s) != GN_HSA_STATUS_SUCCESS)
		return NULL;
	return s;
}

// search carries an iteration's target and what went wrong in it: a
// failing info query inside a callback ends the iteration with its
// status, and stage names the query.
struct search {
	uint32_t domain, bdfid;
	hsa_handle found;
	int ok;
	size_t granule;
	const char *stage;
};

static hsa_status find_agent(hsa_handle agent, void *data) {
	struct search *s = data;
	uint32_t type = 0, bdfid = 0, domain = 0;
	hsa_status rc;
	if ((rc = hsa.agent_get_info(agent, GN_HSA_AGENT_INFO_DEVICE, &type)) != 0) {
		s->stage = "hsa_agent_get_info(HSA_AGENT_INFO_DEVICE)";
		return rc;
	}
	if (type != GN_HSA_DEVICE_TYPE_GPU)
		return GN_HSA_STATUS_SUCCESS;
	// The BDF id is uint16_t in older headers, uint32_t in newer: the
	// zeroed uint32_t reads either.
	if ((rc = hsa.agent_get_info(agent, GN_HSA_AMD_AGENT_INFO_BDFID, &bdfid)) != 0) {
		s->stage = "hsa_agent_get_info(HSA_AMD_AGENT_INFO_BDFID)";
		return rc;
	}
	if ((rc = hsa.agent_get_info(agent, GN_HSA_AMD_AGENT_INFO_DOMAIN, &domain)) != 0) {
		s->stage = "hsa_agent_get_info(HSA_AMD_AGENT_INFO_DOMAIN)";
		return rc;
	}
	if (bdfid != s->bdfid || domain != s->domain)
		return GN_HSA_STATUS_SUCCESS;
	s->found = agent;
	s->ok = 1;
	return GN_HSA_STATUS_INFO_BREAK;
}

// find_pool picks the agent's VRAM: the global segment's coarse-grained
// pool the runtime allocates from (the fine-grained one is memory the
// host sees coherently, not what NCCL and NIXL register).
static hsa_status find_pool(hsa_handle pool, void *data) {
	struct search *s = data;
	uint32_t segment = 0, flags = 0;
	bool alloc = false;
	size_t granule = 0;
	hsa_status rc;
	if ((rc = hsa.pool_get_info(pool, GN_HSA_AMD_MEMORY_POOL_INFO_SEGMENT, &segment)) != 0) {
		s->stage = "hsa_amd_memory_pool_get_info(HSA_AMD_MEMORY_POOL_INFO_SEGMENT)";
		return rc;
	}
	if (segment != GN_HSA_AMD_SEGMENT_GLOBAL)
		return GN_HSA_STATUS_SUCCESS;
	if ((rc = hsa.pool_get_info(pool, GN_HSA_AMD_MEMORY_POOL_INFO_GLOBAL_FLAGS, &flags)) != 0) {
		s->stage = "hsa_amd_memory_pool_get_info(HSA_AMD_MEMORY_POOL_INFO_GLOBAL_FLAGS)";
		return rc;
	}
	if (flags & GN_HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_FINE_GRAINED)
		return GN_HSA_STATUS_SUCCESS;
	if ((rc = hsa.pool_get_info(pool, GN_HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_ALLOWED, &alloc)) != 0) {
		s->stage = "hsa_amd_memory_pool_get_info(HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_ALLOWED)";
		return rc;
	}
	if (!alloc)
		return GN_HSA_STATUS_SUCCESS;
	if ((rc = hsa.pool_get_info(pool, GN_HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_GRANULE, &granule)) != 0) {
		s->stage = "hsa_amd_memory_pool_get_info(HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_GRANULE)";
		return rc;
	}
	s->found = pool;
	s->granule = granule ? granule : 4096;
	s->ok = 1;
	return GN_HSA_STATUS_INFO_BREAK;
}

void gn_hsa_free(struct gn_hsamem *m) {
	if (m->dmabuf_fd >= 0)
		hsa.close_dmabuf(m->dmabuf_fd);
	m->dmabuf_fd = -1;
	if (m->ptr) {
		hsa.pool_free(m->ptr);
		m->ptr = NULL;
	}
	if (m->initialised) {
		hsa.shut_down();
		m->initialised = 0;
	}
}

// iterated turns an iteration's status into the call's result: a break
// is the callback's success, anything else but success an error.
static int iterated(struct gn_hsamem *m, hsa_status rc, struct search *s, const char *call, const char *none,
	const char **stage) {
	if (rc == GN_HSA_STATUS_INFO_BREAK && s->ok)
		return 0;
	*stage = rc != GN_HSA_STATUS_SUCCESS && s->stage ? s->stage : rc != GN_HSA_STATUS_SUCCESS ? call : none;
	gn_hsa_free(m);
	return rc != GN_HSA_STATUS_SUCCESS ? rc : -1;
}

int gn_hsa_alloc(struct gn_hsamem *m, uint32_t domain, uint32_t bdfid, size_t len, const char **stage) {
	memset(m, 0, sizeof *m);
	m->dmabuf_fd = -1;
	if (!hsa_loaded) {
		*stage = "load the HSA runtime";
		return -1;
	}
	hsa_status rc;
	if ((rc = hsa.init()) != 0) {
		*stage = "hsa_init";
		return rc;
	}
	m->initialised = 1;
	struct search agent = {.domain = domain, .bdfid = bdfid};
	rc = hsa.iterate_agents(find_agent, &agent);
	if ((rc = iterated(m, rc, &agent, "hsa_iterate_agents", "no GPU agent has this PCI address", stage)) != 0)
		return rc;
	struct search pool = {0};
	rc = hsa.iterate_pools(agent.found, find_pool, &pool);
	if ((rc = iterated(m, rc, &pool, "hsa_amd_agent_iterate_memory_pools",
		     "the GPU agent has no coarse-grained global memory pool the runtime allocates from", stage)) != 0)
		return rc;
	m->len = (len + pool.granule - 1) / pool.granule * pool.granule;
	void *p = NULL;
	if ((rc = hsa.pool_allocate(pool.found, m->len, 0, &p)) != 0) {
		*stage = "hsa_amd_memory_pool_allocate";
		gn_hsa_free(m);
		return rc;
	}
	m->ptr = p;
	if (!hsa.export_dmabuf) {
		m->dmabuf_missing = 1;
		return 0;
	}
	// A failed export is not fatal: registration falls back to the
	// address (amdgpu's peer-memory client), and the result says why.
	int fd = -1;
	uint64_t off = 0;
	m->dmabuf_result = hsa.export_dmabuf(m->ptr, m->len, &fd, &off);
	if (m->dmabuf_result == GN_HSA_STATUS_SUCCESS) {
		m->dmabuf_fd = fd;
		m->dmabuf_offset = off;
	}
	return 0;
}
