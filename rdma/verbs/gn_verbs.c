// dlvsym is a GNU extension.
#define _GNU_SOURCE
#include "gn_verbs.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

// From <linux/mempolicy.h>; called through syscall(2) so the agent needs
// no libnuma.
#define GN_MPOL_PREFERRED 1
#define GN_MPOL_F_NODE (1 << 0)
#define GN_MPOL_F_ADDR (1 << 1)
// Node masks cover the kernel's largest MAX_NUMNODES (1024).
#define GN_MAX_NODES 1024

// The library's entry points, resolved once. The process has one copy of
// libibverbs whatever we do, so one table (set under pthread_once) is the
// honest model.
static struct {
	struct ibv_device **(*get_device_list)(int *);
	void (*free_device_list)(struct ibv_device **);
	const char *(*get_device_name)(struct ibv_device *);
	struct ibv_context *(*open_device)(struct ibv_device *);
	int (*close_device)(struct ibv_context *);
	int (*query_port)(struct ibv_context *, uint8_t, struct _compat_ibv_port_attr *);
	int (*query_gid)(struct ibv_context *, uint8_t, int, union ibv_gid *);
	struct ibv_pd *(*alloc_pd)(struct ibv_context *);
	int (*dealloc_pd)(struct ibv_pd *);
	struct ibv_mr *(*reg_mr)(struct ibv_pd *, void *, size_t, int);
	// reg_mr_iova2 (rdma-core 29, IBVERBS_1.8) is optional: it drops the
	// optional access flags (relaxed ordering) where the kernel cannot
	// take them, which the plain ibv_reg_mr symbol does not.
	struct ibv_mr *(*reg_mr_iova2)(struct ibv_pd *, void *, size_t, uint64_t, unsigned int);
	// reg_dmabuf_mr (rdma-core 34, IBVERBS_1.12) is optional: GPU
	// memory exported as a dma-buf.
	struct ibv_mr *(*reg_dmabuf_mr)(struct ibv_pd *, uint64_t, size_t, uint64_t, int, int);
	int (*dereg_mr)(struct ibv_mr *);
	struct ibv_cq *(*create_cq)(struct ibv_context *, int, void *, struct ibv_comp_channel *, int);
	int (*destroy_cq)(struct ibv_cq *);
	struct ibv_qp *(*create_qp)(struct ibv_pd *, struct ibv_qp_init_attr *);
	int (*modify_qp)(struct ibv_qp *, struct ibv_qp_attr *, int);
	int (*destroy_qp)(struct ibv_qp *);
} lib;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_err[256];
static int load_rc = -1;

static void *sym(void *h, const char *name) {
	// Bind the current ABI explicitly: the library also exports
	// IBVERBS_1.0 compatibility versions of these names.
	void *p = dlvsym(h, name, "IBVERBS_1.1");
	if (!p)
		p = dlsym(h, name);
	return p;
}

static void do_load(void) {
	void *h = dlopen("libibverbs.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		const char *e = dlerror();
		snprintf(load_err, sizeof load_err, "%s", e ? e : "dlopen libibverbs.so.1 failed");
		return;
	}
#define RESOLVE(field, name)                                                              \
	do {                                                                              \
		*(void **)(&lib.field) = sym(h, name);                                    \
		if (!lib.field) {                                                         \
			snprintf(load_err, sizeof load_err, "libibverbs.so.1 lacks %s", name); \
			return;                                                           \
		}                                                                         \
	} while (0)
	RESOLVE(get_device_list, "ibv_get_device_list");
	RESOLVE(free_device_list, "ibv_free_device_list");
	RESOLVE(get_device_name, "ibv_get_device_name");
	RESOLVE(open_device, "ibv_open_device");
	RESOLVE(close_device, "ibv_close_device");
	RESOLVE(query_port, "ibv_query_port");
	RESOLVE(query_gid, "ibv_query_gid");
	RESOLVE(alloc_pd, "ibv_alloc_pd");
	RESOLVE(dealloc_pd, "ibv_dealloc_pd");
	RESOLVE(reg_mr, "ibv_reg_mr");
	RESOLVE(dereg_mr, "ibv_dereg_mr");
	RESOLVE(create_cq, "ibv_create_cq");
	RESOLVE(destroy_cq, "ibv_destroy_cq");
	RESOLVE(create_qp, "ibv_create_qp");
	RESOLVE(modify_qp, "ibv_modify_qp");
	RESOLVE(destroy_qp, "ibv_destroy_qp");
#undef RESOLVE
	*(void **)(&lib.reg_mr_iova2) = dlsym(h, "ibv_reg_mr_iova2");
	*(void **)(&lib.reg_dmabuf_mr) = dlsym(h, "ibv_reg_dmabuf_mr");
	load_rc = 0;
}

int gn_load(char *err, size_t n) {
	pthread_once(&load_once, do_load);
	if (load_rc != 0 && err && n)
		snprintf(err, n, "%s", load_err);
	return load_rc;
}

struct ibv_device **gn_device_list(int *num, int *errnum) {
	errno = 0;
	struct ibv_device **l = lib.get_device_list(num);
	*errnum = errno;
	return l;
}

void gn_free_device_list(struct ibv_device **list) { lib.free_device_list(list); }
const char *gn_device_name(struct ibv_device *dev) { return lib.get_device_name(dev); }
struct ibv_context *gn_open_device(struct ibv_device *dev) {
	errno = 0;
	return lib.open_device(dev);
}
int gn_close_device(struct ibv_context *ctx) { return lib.close_device(ctx); }

int gn_query_port(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *attr) {
	// What the header's inline does, with the library symbol taken from
	// the table instead of the link.
	struct verbs_context *vctx = verbs_get_ctx_op(ctx, query_port);
	memset(attr, 0, sizeof *attr);
	if (!vctx)
		return lib.query_port(ctx, port, (struct _compat_ibv_port_attr *)attr);
	return vctx->query_port(ctx, port, attr, sizeof *attr);
}

int gn_query_gid(struct ibv_context *ctx, uint8_t port, int index, uint8_t gid[16]) {
	union ibv_gid g;
	// ibv_query_gid returns -1 with errno set on failure (an index past
	// the table: EINVAL), and 0 with an all-zero GID for an empty entry.
	errno = 0;
	if (lib.query_gid(ctx, port, index, &g) != 0)
		return errno ? errno : EIO;
	memcpy(gid, g.raw, 16);
	return 0;
}

int64_t gn_now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void gn_res_destroy(struct gn_res *r) {
	if (r->qp)
		lib.destroy_qp(r->qp);
	if (r->scq)
		lib.destroy_cq(r->scq);
	if (r->rcq)
		lib.destroy_cq(r->rcq);
	if (r->mr)
		lib.dereg_mr(r->mr);
	if (r->pd)
		lib.dealloc_pd(r->pd);
	if (r->buf && !r->ext_buf)
		munmap(r->buf, r->map_len);
	memset(r, 0, sizeof *r);
}

static int fail(struct gn_res *r, const char **stage, const char *what) {
	int e = errno ? errno : EINVAL;
	*stage = what;
	gn_res_destroy(r);
	return -e;
}

// place_buffer asks for the buffer's pages on node (MPOL_PREFERRED: best
// effort, never an allocation failure) before they are first touched.
// Returns 0 or the errno of mbind (EPERM where seccomp forbids it).
static int place_buffer(void *buf, size_t len, int node) {
	unsigned long mask[GN_MAX_NODES / (8 * sizeof(unsigned long))];
	if (node < 0 || node >= GN_MAX_NODES)
		return EINVAL;
	memset(mask, 0, sizeof mask);
	mask[node / (8 * sizeof(unsigned long))] = 1UL << (node % (8 * sizeof(unsigned long)));
	// maxnode counts one more than the bits the kernel reads.
	if (syscall(SYS_mbind, buf, len, GN_MPOL_PREFERRED, mask, (unsigned long)GN_MAX_NODES + 1, 0) != 0)
		return errno;
	return 0;
}

// page_node is the NUMA node of the page at addr (already touched), -1
// when the kernel does not say.
static int page_node(void *addr) {
	int node = -1;
	if (syscall(SYS_get_mempolicy, &node, NULL, 0UL, addr, (unsigned long)(GN_MPOL_F_NODE | GN_MPOL_F_ADDR)) != 0)
		return -1;
	return node;
}

static int res_verbs(struct gn_res *r, const struct gn_extmem *ext, const char **stage);

int gn_res_create(struct gn_res *r, struct ibv_context *ctx, uint8_t port, size_t len, uint32_t depth, int numa_node,
	const char **stage) {
	(void)port;
	memset(r, 0, sizeof *r);
	r->ctx = ctx;
	r->len = len;
	r->depth = depth;
	r->buf_node = -1;
	// Whole pages of our own, so the NUMA policy binds only this buffer.
	long page = sysconf(_SC_PAGESIZE);
	r->map_len = (len + (size_t)page - 1) / (size_t)page * (size_t)page;
	void *buf = mmap(NULL, r->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED) {
		errno = ENOMEM;
		return fail(r, stage, "allocate buffer");
	}
	r->buf = buf;
	if (numa_node >= 0)
		r->mbind_errno = place_buffer(r->buf, r->map_len, numa_node);
	memset(r->buf, 0, len);
	r->buf_node = page_node(r->buf);
	return res_verbs(r, NULL, stage);
}

int gn_res_create_ext(struct gn_res *r, struct ibv_context *ctx, uint8_t port, const struct gn_extmem *ext,
	uint32_t depth, const char **stage) {
	(void)port;
	memset(r, 0, sizeof *r);
	r->ctx = ctx;
	r->len = ext->len;
	r->depth = depth;
	r->buf_node = -1;
	r->buf = (void *)(uintptr_t)ext->addr;
	r->ext_buf = 1;
	return res_verbs(r, ext, stage);
}

// reg_ext registers the caller's (GPU) memory: its dma-buf where there is
// one, else (or when the dma-buf is refused) its address, which only a
// peer-memory client (nvidia_peermem, amdgpu's) lets the kernel resolve.
static int reg_ext(struct gn_res *r, const struct gn_extmem *ext, int access) {
	if (ext->dmabuf_fd >= 0) {
		if (!lib.reg_dmabuf_mr) {
			r->dmabuf_errno = ENOSYS;
		} else {
			errno = 0;
			r->mr = lib.reg_dmabuf_mr(r->pd, ext->dmabuf_offset, ext->len, ext->addr, ext->dmabuf_fd, access);
			if (r->mr) {
				r->mem_path = GN_MEM_DMABUF;
				return 0;
			}
			r->dmabuf_errno = errno ? errno : EINVAL;
		}
	}
	errno = 0;
	r->mr = lib.reg_mr(r->pd, r->buf, ext->len, access);
	if (!r->mr)
		return -1;
	r->mem_path = GN_MEM_PEERMEM;
	return 0;
}

// res_verbs creates the verbs objects over r->buf: protection domain,
// registration (of ext when set), completion queues and the QP.
static int res_verbs(struct gn_res *r, const struct gn_extmem *ext, const char **stage) {
	struct ibv_context *ctx = r->ctx;
	size_t len = r->len;
	uint32_t depth = r->depth;
	errno = 0;
	if (!(r->pd = lib.alloc_pd(ctx)))
		return fail(r, stage, "ibv_alloc_pd");
	errno = 0;
	int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
	if (ext) {
		if (reg_ext(r, ext, access) != 0)
			return fail(r, stage, r->dmabuf_errno ? "ibv_reg_mr (GPU memory, after ibv_reg_dmabuf_mr refused its dma-buf)"
							      : "ibv_reg_mr (GPU memory)");
	} else if (lib.reg_mr_iova2) {
		// Relaxed ordering as perftest asks for it: PCIe writes into the
		// buffer may pass each other, which is what fast links need.
		r->mr = lib.reg_mr_iova2(r->pd, r->buf, len, (uintptr_t)r->buf, (unsigned int)access | IBV_ACCESS_RELAXED_ORDERING);
		r->relaxed_ordering = r->mr != NULL;
	}
	if (!r->mr) {
		// No iova2, or a kernel or provider that refuses the flag
		// outright: register without it.
		errno = 0;
		r->mr = lib.reg_mr(r->pd, r->buf, len, access);
	}
	if (!r->mr)
		return fail(r, stage, "ibv_reg_mr");
	errno = 0;
	if (!(r->scq = lib.create_cq(ctx, (int)depth * 2, NULL, NULL, 0)))
		return fail(r, stage, "ibv_create_cq (send)");
	errno = 0;
	if (!(r->rcq = lib.create_cq(ctx, (int)depth * 2, NULL, NULL, 0)))
		return fail(r, stage, "ibv_create_cq (recv)");
	// Inline sends for small messages, as perftest does; a device that
	// supports less inline data refuses the QP, so step down.
	uint32_t inl[] = {220, 64, 0};
	// GPU memory is not the CPU's to read: no inline sends there.
	for (size_t i = ext ? 2 : 0; i < sizeof inl / sizeof inl[0]; i++) {
		struct ibv_qp_init_attr a = {
			.send_cq = r->scq,
			.recv_cq = r->rcq,
			.cap = {.max_send_wr = depth, .max_recv_wr = depth, .max_send_sge = 1, .max_recv_sge = 1, .max_inline_data = inl[i]},
			.qp_type = IBV_QPT_RC,
		};
		errno = 0;
		if ((r->qp = lib.create_qp(r->pd, &a))) {
			// The provider may grant inline data unasked.
			r->inline_max = ext ? 0 : a.cap.max_inline_data;
			break;
		}
	}
	if (!r->qp)
		return fail(r, stage, "ibv_create_qp");
	return 0;
}

int gn_connect(struct gn_res *r, uint8_t port, int sgid_index, int is_global, const uint8_t dgid[16],
	uint16_t dlid, uint32_t dqpn, uint32_t rpsn, uint32_t lpsn, int mtu, uint8_t sl, uint8_t traffic_class,
	const char **stage) {
	return gn_connect_rd(r, port, sgid_index, is_global, dgid, dlid, dqpn, rpsn, lpsn, mtu, sl, traffic_class, 1, 1, stage);
}

// Checked every this many empty polls, so the clock is not read per poll.
#define CLOCK_EVERY 1024

void gn_cancel(struct gn_res *r) { __atomic_store_n(&r->cancel, 1, __ATOMIC_RELAXED); }

static int cancelled(struct gn_res *r) { return __atomic_load_n(&r->cancel, __ATOMIC_RELAXED); }

int gn_write_bw(struct gn_res *r, size_t size, uint64_t raddr, uint32_t rkey, uint64_t iters,
	int64_t duration_ns, int64_t deadline_ns, uint64_t *done, int64_t *elapsed_ns) {
	// Signal every sig-th write (and the last) as perftest does with its
	// CQ moderation: a completion then retires the writes before it.
	uint64_t sig = r->depth / 2 < 100 ? r->depth / 2 : 100;
	if (sig == 0)
		sig = 1;
	struct ibv_sge sge = {.addr = (uintptr_t)r->buf, .length = (uint32_t)size, .lkey = r->mr->lkey};
	struct ibv_send_wr wr, *bad;
	struct ibv_wc wc[16];
	uint64_t posted = 0, completed = 0;
	// end is the last write to post: iters, or once the duration is up
	// the next signaled one, so every posted write is retired by a
	// completion.
	uint64_t end = iters;
	int64_t start = gn_now_ns(), stop_at = duration_ns > 0 ? start + duration_ns : 0;
	unsigned idle = 0;
	int rc = 0;

	*done = 0;
	while (completed < posted || posted < end) {
		while (posted < end && posted - completed < r->depth) {
			memset(&wr, 0, sizeof wr);
			wr.wr_id = posted + 1;
			wr.sg_list = &sge;
			wr.num_sge = 1;
			wr.opcode = IBV_WR_RDMA_WRITE;
			if ((posted + 1) % sig == 0 || posted + 1 == end)
				wr.send_flags = IBV_SEND_SIGNALED;
			if (size <= r->inline_max)
				wr.send_flags |= IBV_SEND_INLINE;
			wr.wr.rdma.remote_addr = raddr;
			wr.wr.rdma.rkey = rkey;
			if ((rc = ibv_post_send(r->qp, &wr, &bad))) {
				rc = -rc;
				goto out;
			}
			posted++;
		}
		int n = ibv_poll_cq(r->scq, 16, wc);
		if (n < 0) {
			rc = -EIO;
			goto out;
		}
		for (int i = 0; i < n; i++) {
			if (wc[i].status != IBV_WC_SUCCESS) {
				rc = (int)wc[i].status;
				goto out;
			}
			completed = wc[i].wr_id;
		}
		if (n == 0 && ++idle % CLOCK_EVERY != 0)
			continue;
		int64_t now = gn_now_ns();
		if (now > deadline_ns) {
			rc = -ETIMEDOUT;
			goto out;
		}
		if (cancelled(r)) {
			rc = -ECANCELED;
			goto out;
		}
		if (stop_at && end == iters && now >= stop_at) {
			// Stop at the next signaled write. Waiting for posted to
			// be a multiple of sig instead never ends when depth is
			// not one: with a full window posted is completed (a
			// multiple of sig) plus depth at every check.
			uint64_t next = (posted + sig - 1) / sig * sig;
			end = next < iters ? next : iters;
		}
	}
out:
	*elapsed_ns = gn_now_ns() - start;
	*done = completed;
	return rc;
}

int gn_post_recv(struct gn_res *r, size_t size) {
	struct ibv_sge sge = {.addr = (uintptr_t)r->buf + size, .length = (uint32_t)size, .lkey = r->mr->lkey};
	struct ibv_recv_wr wr = {.wr_id = 1, .sg_list = &sge, .num_sge = 1}, *bad;
	return -ibv_post_recv(r->qp, &wr, &bad);
}

// post_batched posts size bytes from the first half of the buffer with
// opcode (for an RDMA WRITE to raddr/rkey); every 16th and the last are
// signaled so the send queue is retired in batches.
static int post_batched(struct gn_res *r, enum ibv_wr_opcode opcode, size_t size, uint64_t raddr, uint32_t rkey,
                        uint64_t i, int last) {
	struct ibv_sge sge = {.addr = (uintptr_t)r->buf, .length = (uint32_t)size, .lkey = r->mr->lkey};
	struct ibv_send_wr wr, *bad;
	memset(&wr, 0, sizeof wr);
	wr.wr_id = i;
	wr.sg_list = &sge;
	wr.num_sge = 1;
	wr.opcode = opcode;
	if (i % 16 == 15 || last)
		wr.send_flags = IBV_SEND_SIGNALED;
	if (size <= r->inline_max)
		wr.send_flags |= IBV_SEND_INLINE;
	wr.wr.rdma.remote_addr = raddr;
	wr.wr.rdma.rkey = rkey;
	return -ibv_post_send(r->qp, &wr, &bad);
}

// post_send sends size bytes from the first half of the buffer.
static int post_send(struct gn_res *r, size_t size, uint64_t i, int last) {
	return post_batched(r, IBV_WR_SEND, size, 0, 0, i, last);
}

// reap_send takes finished sends off the send CQ without waiting.
static int reap_send(struct gn_res *r) {
	struct ibv_wc wc[4];
	int n = ibv_poll_cq(r->scq, 4, wc);
	if (n < 0)
		return -EIO;
	for (int i = 0; i < n; i++)
		if (wc[i].status != IBV_WC_SUCCESS)
			return (int)wc[i].status;
	return 0;
}

// Bounds the wait in failure_cause for the send queue's error completion.
#define CAUSE_WAIT_NS 100000000

// failure_cause is the status to report for a failed receive. A flushed
// receive only says the QP entered the error state; the send queue says
// why (retry counter exceeded when the peer is gone), so its first
// failed completion that is not itself a flush is the cause. That
// completion may land on the send CQ just after the flush on the
// receive CQ: wait for it briefly.
static int failure_cause(struct gn_res *r, int status) {
	if (status != IBV_WC_WR_FLUSH_ERR)
		return status;
	int64_t until = gn_now_ns() + CAUSE_WAIT_NS;
	struct ibv_wc wc[16];
	do {
		int n = ibv_poll_cq(r->scq, 16, wc);
		if (n < 0)
			return status;
		for (int i = 0; i < n; i++) {
			if (wc[i].status == IBV_WC_WR_FLUSH_ERR)
				return status; // flushed sends: no other cause
			if (wc[i].status != IBV_WC_SUCCESS)
				return (int)wc[i].status;
		}
	} while (gn_now_ns() < until);
	return status;
}

// wait_recv waits for one receive, reaping sends meanwhile, and posts the
// next receive.
static int wait_recv(struct gn_res *r, size_t size, int64_t deadline_ns) {
	struct ibv_wc wc;
	unsigned idle = 0;
	int rc;
	for (;;) {
		int n = ibv_poll_cq(r->rcq, 1, &wc);
		if (n < 0)
			return -EIO;
		if (n == 1) {
			if (wc.status != IBV_WC_SUCCESS)
				return failure_cause(r, (int)wc.status);
			return gn_post_recv(r, size);
		}
		if (++idle % CLOCK_EVERY == 0) {
			if ((rc = reap_send(r)))
				return rc;
			if (gn_now_ns() > deadline_ns)
				return -ETIMEDOUT;
			if (cancelled(r))
				return -ECANCELED;
		}
	}
}

int gn_lat_ping(struct gn_res *r, size_t size, uint64_t iters, int64_t deadline_ns, int64_t *stamps) {
	int rc;
	for (uint64_t i = 0; i < iters; i++) {
		stamps[i] = gn_now_ns();
		if ((rc = post_send(r, size, i, 0)))
			return rc;
		if ((rc = wait_recv(r, size, deadline_ns)))
			return rc;
		// Only every 16th send is signaled: poll for it then, not on
		// every round trip (a poll costs time inside the measurement).
		if (i % 16 == 15 && (rc = reap_send(r)))
			return rc;
	}
	stamps[iters] = gn_now_ns();
	return 0;
}

// wait_last_send polls the send queue until the completion of send
// iters-1 (the signaled last one) arrives.
static int wait_last_send(struct gn_res *r, uint64_t iters, int64_t deadline_ns) {
	for (;;) {
		struct ibv_wc wc;
		int n = ibv_poll_cq(r->scq, 1, &wc);
		if (n < 0)
			return -EIO;
		if (n == 1) {
			if (wc.status != IBV_WC_SUCCESS)
				return (int)wc.status;
			if (wc.wr_id + 1 == iters)
				return 0;
			continue;
		}
		if (gn_now_ns() > deadline_ns)
			return -ETIMEDOUT;
		if (cancelled(r))
			return -ECANCELED;
	}
}

int gn_lat_pong(struct gn_res *r, size_t size, uint64_t iters, int64_t deadline_ns) {
	int rc;
	for (uint64_t i = 0; i < iters; i++) {
		if ((rc = wait_recv(r, size, deadline_ns)))
			return rc;
		if ((rc = post_send(r, size, i, i + 1 == iters)))
			return rc;
		if (i % 16 == 15 && i + 1 < iters && (rc = reap_send(r)))
			return rc;
	}
	// The last reply is signaled: wait until the peer acknowledged it, so
	// tearing the QP down does not lose it.
	return wait_last_send(r, iters, deadline_ns);
}

// ---- perftest's other tests: RDMA READ bandwidth, RDMA WRITE latency and
// several QPs driven by one loop (ib_read_bw, ib_write_lat, -q N).

// ibv_query_device, resolved apart from the table above (only the READ
// test needs it).
static pthread_once_t qdev_once = PTHREAD_ONCE_INIT;
static int (*qdev_fn)(struct ibv_context *, struct ibv_device_attr *);

static void qdev_load(void) {
	// The library is loaded already (gn_load): this takes another
	// reference to the same copy.
	void *h = dlopen("libibverbs.so.1", RTLD_NOW | RTLD_LOCAL);
	if (h)
		*(void **)(&qdev_fn) = sym(h, "ibv_query_device");
}

int gn_query_rd_atom(struct ibv_context *ctx, int *responder, int *initiator) {
	pthread_once(&qdev_once, qdev_load);
	if (!qdev_fn)
		return -ENOSYS;
	struct ibv_device_attr a;
	memset(&a, 0, sizeof a);
	int rc = qdev_fn(ctx, &a);
	if (rc)
		return -rc;
	*responder = a.max_qp_rd_atom;
	*initiator = a.max_qp_init_rd_atom;
	return 0;
}

int gn_connect_rd(struct gn_res *r, uint8_t port, int sgid_index, int is_global, const uint8_t dgid[16],
	uint16_t dlid, uint32_t dqpn, uint32_t rpsn, uint32_t lpsn, int mtu, uint8_t sl, uint8_t traffic_class,
	uint8_t rd_atomic, uint8_t dest_rd_atomic, const char **stage) {
	struct ibv_qp_attr a;
	int rc;

	memset(&a, 0, sizeof a);
	a.qp_state = IBV_QPS_INIT;
	a.pkey_index = 0;
	a.port_num = port;
	a.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
	if ((rc = lib.modify_qp(r->qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS))) {
		*stage = "modify QP to INIT";
		return -rc;
	}

	memset(&a, 0, sizeof a);
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = (enum ibv_mtu)mtu;
	a.dest_qp_num = dqpn;
	a.rq_psn = rpsn;
	a.max_dest_rd_atomic = dest_rd_atomic ? dest_rd_atomic : 1;
	a.min_rnr_timer = 12;
	a.ah_attr.dlid = dlid;
	a.ah_attr.sl = sl;
	a.ah_attr.port_num = port;
	if (is_global) {
		a.ah_attr.is_global = 1;
		memcpy(a.ah_attr.grh.dgid.raw, dgid, 16);
		a.ah_attr.grh.sgid_index = (uint8_t)sgid_index;
		a.ah_attr.grh.hop_limit = 64;
		a.ah_attr.grh.traffic_class = traffic_class;
	}
	if ((rc = lib.modify_qp(r->qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
		IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER))) {
		*stage = "modify QP to RTR";
		return -rc;
	}

	memset(&a, 0, sizeof a);
	a.qp_state = IBV_QPS_RTS;
	// About 67 ms per try, 6 retries: a dead peer surfaces as a failed
	// completion within a second instead of a hang. Not 7: rxe's
	// completer (rxe_comp.c) never counts a retry_cnt of 7 down, so a lost
	// peer was retried for ever on soft-RoCE (hardware counts 7).
	a.timeout = 14;
	a.retry_cnt = 6;
	a.rnr_retry = 7;
	a.sq_psn = lpsn;
	a.max_rd_atomic = rd_atomic ? rd_atomic : 1;
	if ((rc = lib.modify_qp(r->qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
		IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC))) {
		*stage = "modify QP to RTS";
		return -rc;
	}
	return 0;
}

int gn_bw(struct gn_res **rs, int nqp, int read, size_t size, const uint64_t *raddr, const uint32_t *rkey,
	uint64_t iters, int64_t duration_ns, int64_t deadline_ns, uint64_t *done, int64_t *elapsed_ns) {
	uint64_t posted[GN_MAX_QPS], completed[GN_MAX_QPS], end[GN_MAX_QPS];
	struct ibv_wc wc[16];
	int64_t start = gn_now_ns(), stop_at = duration_ns > 0 ? start + duration_ns : 0;
	int stopping = 0, rc = 0;
	unsigned idle = 0;

	*done = 0;
	if (nqp < 1 || nqp > GN_MAX_QPS) {
		*elapsed_ns = 0;
		return -EINVAL;
	}
	// The depth is per QP, as perftest's -t with -q.
	uint64_t depth = rs[0]->depth;
	uint64_t sig = depth / 2 < 100 ? depth / 2 : 100;
	// READs over 8 KiB each get a completion, as ib_read_bw's (perftest
	// turns CQ moderation off above its MSG_SIZE_CQ_MOD_LIMIT): with one
	// per 64 our READ figure on soft-RoCE was 1.25x perftest's, with one
	// each about 1.08x. Writes keep the moderation: one completion each
	// took our bidirectional WRITE figure from within 0.9..1.1x of
	// ib_write_bw -b's down to 0.87x there.
	if (sig == 0 || (read && size > 8192))
		sig = 1;
	for (int q = 0; q < nqp; q++) {
		posted[q] = completed[q] = 0;
		end[q] = iters;
	}
	for (;;) {
		int busy = 0, got = 0;
		for (int q = 0; q < nqp; q++) {
			struct gn_res *r = rs[q];
			struct ibv_sge sge = {.addr = (uintptr_t)r->buf, .length = (uint32_t)size, .lkey = r->mr->lkey};
			struct ibv_send_wr wr, *bad;
			while (posted[q] < end[q] && posted[q] - completed[q] < depth) {
				memset(&wr, 0, sizeof wr);
				wr.wr_id = posted[q] + 1;
				wr.sg_list = &sge;
				wr.num_sge = 1;
				wr.opcode = read ? IBV_WR_RDMA_READ : IBV_WR_RDMA_WRITE;
				if ((posted[q] + 1) % sig == 0 || posted[q] + 1 == end[q])
					wr.send_flags = IBV_SEND_SIGNALED;
				// A READ carries no data out: never inline.
				if (!read && size <= r->inline_max)
					wr.send_flags |= IBV_SEND_INLINE;
				wr.wr.rdma.remote_addr = raddr[q];
				wr.wr.rdma.rkey = rkey[q];
				if ((rc = ibv_post_send(r->qp, &wr, &bad))) {
					rc = -rc;
					goto out;
				}
				posted[q]++;
			}
			int n = ibv_poll_cq(r->scq, 16, wc);
			if (n < 0) {
				rc = -EIO;
				goto out;
			}
			for (int i = 0; i < n; i++) {
				if (wc[i].status != IBV_WC_SUCCESS) {
					rc = (int)wc[i].status;
					goto out;
				}
				completed[q] = wc[i].wr_id;
			}
			got += n;
			if (completed[q] < posted[q] || posted[q] < end[q])
				busy = 1;
		}
		if (!busy)
			break;
		if (got == 0 && ++idle % CLOCK_EVERY != 0)
			continue;
		int64_t now = gn_now_ns();
		if (now > deadline_ns) {
			rc = -ETIMEDOUT;
			goto out;
		}
		if (cancelled(rs[0])) {
			rc = -ECANCELED;
			goto out;
		}
		if (stop_at && !stopping && now >= stop_at) {
			// Every QP stops at its next signaled request, so each
			// posted one is retired by a completion (see gn_write_bw).
			stopping = 1;
			for (int q = 0; q < nqp; q++) {
				uint64_t next = (posted[q] + sig - 1) / sig * sig;
				end[q] = next < iters ? next : iters;
			}
		}
	}
out:
	*elapsed_ns = gn_now_ns() - start;
	for (int q = 0; q < nqp; q++)
		*done += completed[q];
	return rc;
}

// wlat_post writes the first half of the buffer (its last byte the
// iteration's mark) into the peer's second half; every 16th write and
// the last are signaled.
static int wlat_post(struct gn_res *r, size_t size, uint64_t raddr, uint32_t rkey, uint64_t i, int last) {
	return post_batched(r, IBV_WR_RDMA_WRITE, size, raddr, rkey, i, last);
}

// wlat_wait polls the last byte of the second half until the peer's
// write brings mark; failed writes surface on the send CQ meanwhile.
static int wlat_wait(struct gn_res *r, size_t size, uint8_t mark, int64_t deadline_ns) {
	volatile uint8_t *p = (volatile uint8_t *)r->buf + 2 * size - 1;
	unsigned idle = 0;
	int rc;
	while (*p != mark) {
		if (++idle % CLOCK_EVERY == 0) {
			if ((rc = reap_send(r)))
				return rc;
			if (gn_now_ns() > deadline_ns)
				return -ETIMEDOUT;
			if (cancelled(r))
				return -ECANCELED;
		}
	}
	return 0;
}

int gn_wlat(struct gn_res *r, int initiator, size_t size, uint64_t raddr, uint32_t rkey, uint64_t iters,
	int64_t deadline_ns, int64_t *stamps) {
	volatile uint8_t *out = (volatile uint8_t *)r->buf + size - 1;
	int rc;
	for (uint64_t i = 0; i < iters; i++) {
		// 1..255, never the buffer's initial 0, and never the previous
		// round's mark.
		uint8_t mark = (uint8_t)(i % 255 + 1);
		int last = !initiator && i + 1 == iters;
		if (initiator) {
			stamps[i] = gn_now_ns();
			*out = mark;
			if ((rc = wlat_post(r, size, raddr, rkey, i, 0)))
				return rc;
			if ((rc = wlat_wait(r, size, mark, deadline_ns)))
				return rc;
		} else {
			if ((rc = wlat_wait(r, size, mark, deadline_ns)))
				return rc;
			*out = mark;
			if ((rc = wlat_post(r, size, raddr, rkey, i, last)))
				return rc;
		}
		if (i % 16 == 15 && !last && (rc = reap_send(r)))
			return rc;
	}
	if (initiator) {
		stamps[iters] = gn_now_ns();
		return 0;
	}
	// The last reply is signaled: wait until the peer acknowledged it, so
	// tearing the QP down does not lose it.
	return wait_last_send(r, iters, deadline_ns);
}
