// C side of package verbs: libibverbs is loaded with dlopen, so only its
// headers are needed to build and the agent starts without rdma-core.
// The measuring loops run here, in C, so a cgo call per work request does
// not distort what is measured.
#ifndef GN_VERBS_H
#define GN_VERBS_H

#include <stdint.h>
#include <stddef.h>
#include <infiniband/verbs.h>

// gn_load opens libibverbs.so.1 once per process and resolves the entry
// points. 0 on success; otherwise err (size n) says why.
int gn_load(char *err, size_t n);

// gn_device_list wraps ibv_get_device_list: it returns the list (NULL on
// failure, with *errnum set to errno: ENOSYS when the kernel has no RDMA).
struct ibv_device **gn_device_list(int *num, int *errnum);
void gn_free_device_list(struct ibv_device **list);
const char *gn_device_name(struct ibv_device *dev);
struct ibv_context *gn_open_device(struct ibv_device *dev);
int gn_close_device(struct ibv_context *ctx);

// gn_query_port: ibv_query_port is a macro over an inline function that
// calls the provider directly, with a fallback to the library's symbol.
int gn_query_port(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *attr);
// gn_query_gid returns 0 or the errno of ibv_query_gid; an empty entry
// reads as an all-zero GID with 0.
int gn_query_gid(struct ibv_context *ctx, uint8_t port, int index, uint8_t gid[16]);

// gn_res is everything one probe end holds: one buffer registered once,
// its protection domain, the completion queues and the RC queue pair.
struct gn_res {
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	struct ibv_mr *mr;
	struct ibv_cq *scq;
	struct ibv_cq *rcq;
	struct ibv_qp *qp;
	void *buf;
	size_t len;
	// map_len is the buffer's mapping (whole pages).
	size_t map_len;
	// buf_node is the NUMA node of the buffer's first page (-1 unknown);
	// mbind_errno why asking for the HCA's node failed (0: it did not).
	int buf_node;
	int mbind_errno;
	// relaxed_ordering: the MR was registered with
	// IBV_ACCESS_RELAXED_ORDERING through ibv_reg_mr_iova2.
	int relaxed_ordering;
	uint32_t inline_max;
	uint32_t depth;
	// mem_path is how the buffer was registered (GN_MEM_*); ext_buf: the
	// caller owns it (GPU memory), so it is neither touched nor freed.
	// dmabuf_errno is why ibv_reg_dmabuf_mr refused a dma-buf (0: it
	// was not tried or worked).
	int mem_path;
	int ext_buf;
	int dmabuf_errno;
	// cancel, set from another thread (gn_cancel), stops a running loop
	// with -ECANCELED: how a dead peer's control connection ends a wait.
	int cancel;
};

void gn_cancel(struct gn_res *r);

// gn_res_create allocates a buffer of len bytes, on NUMA node numa_node
// when it is >= 0 (best effort), and the verbs objects; on failure
// everything created so far is released and the error is a negative
// errno with *stage naming the step.
int gn_res_create(struct gn_res *r, struct ibv_context *ctx, uint8_t port, size_t len, uint32_t depth, int numa_node,
	const char **stage);
void gn_res_destroy(struct gn_res *r);

// How a buffer was registered: host memory; GPU memory through its
// dma-buf (ibv_reg_dmabuf_mr); GPU memory by its address (ibv_reg_mr,
// which needs nvidia_peermem or amdgpu's peer-memory client).
#define GN_MEM_HOST 0
#define GN_MEM_DMABUF 1
#define GN_MEM_PEERMEM 2

// gn_extmem is memory the caller allocated (on a GPU) for a QP to
// register instead of a buffer of its own; dmabuf_fd -1 when there is
// no dma-buf, dmabuf_offset addr's offset in it (ROCm's export may hand
// out a dma-buf of the whole allocation the range lies in).
struct gn_extmem {
	uint64_t addr;
	size_t len;
	int dmabuf_fd;
	uint64_t dmabuf_offset;
};

// gn_res_create_ext is gn_res_create over the caller's memory: the
// dma-buf is registered where there is one and the library can
// (ibv_reg_dmabuf_mr), else, or when that is refused, the address.
// The CPU never touches the memory: no inline sends.
int gn_res_create_ext(struct gn_res *r, struct ibv_context *ctx, uint8_t port, const struct gn_extmem *ext,
	uint32_t depth, const char **stage);

// gn_connect moves the QP to RTS toward the remote QP. gid NULL (or
// is_global 0) means InfiniBand addressing by LID only. sl is the
// service level, traffic_class the GRH's (RoCE v2: the IP header's
// DSCP and ECN bits).
int gn_connect(struct gn_res *r, uint8_t port, int sgid_index, int is_global, const uint8_t dgid[16],
	uint16_t dlid, uint32_t dqpn, uint32_t rpsn, uint32_t lpsn, int mtu, uint8_t sl, uint8_t traffic_class,
	const char **stage);

// gn_write_bw posts iters RDMA WRITEs of size bytes (at most depth
// outstanding) to raddr/rkey and waits for them, like ib_write_bw: the
// time runs from the first post to the last completion. With
// duration_ns > 0 it writes until that much time has passed instead
// (iters is then the upper bound). Returns 0, or a negative errno /
// positive ibv_wc_status on a failed completion; *done says how many
// writes completed and *elapsed_ns how long it took.
int gn_write_bw(struct gn_res *r, size_t size, uint64_t raddr, uint32_t rkey, uint64_t iters,
	int64_t duration_ns, int64_t deadline_ns, uint64_t *done, int64_t *elapsed_ns);

// gn_lat_ping is the initiator of a SEND/RECV ping-pong, like ib_send_lat:
// stamps[i] is the time just before the i-th send (iters+1 stamps, the
// last after the final reply), so stamps[i+1]-stamps[i] is a round trip.
int gn_lat_ping(struct gn_res *r, size_t size, uint64_t iters, int64_t deadline_ns, int64_t *stamps);
// gn_lat_pong answers iters pings.
int gn_lat_pong(struct gn_res *r, size_t size, uint64_t iters, int64_t deadline_ns);
// gn_post_recv posts one receive of size bytes into the second half of
// the buffer (before the peer may send).
int gn_post_recv(struct gn_res *r, size_t size);

int64_t gn_now_ns(void);

// ---- perftest's other tests (ib_read_bw, ib_write_lat, -q N).

// GN_MAX_QPS bounds the queue pairs one gn_bw loop drives.
#define GN_MAX_QPS 16

// gn_query_rd_atom reads the device's limits on RDMA READs in flight per
// QP: as responder (max_qp_rd_atom) and initiator (max_qp_init_rd_atom).
// 0 or a negative errno.
int gn_query_rd_atom(struct ibv_context *ctx, int *responder, int *initiator);

// gn_connect_rd is gn_connect with the QP's READs in flight set: rd_atomic
// as initiator (max_rd_atomic), dest_rd_atomic as responder
// (max_dest_rd_atomic); 0 means 1, what gn_connect sets.
int gn_connect_rd(struct gn_res *r, uint8_t port, int sgid_index, int is_global, const uint8_t dgid[16],
	uint16_t dlid, uint32_t dqpn, uint32_t rpsn, uint32_t lpsn, int mtu, uint8_t sl, uint8_t traffic_class,
	uint8_t rd_atomic, uint8_t dest_rd_atomic, const char **stage);

// gn_bw is gn_write_bw over nqp queue pairs from one thread, as perftest
// -q N drives them: each QP posts iters requests (RDMA READ when read,
// else WRITE) of size bytes to its raddr[q]/rkey[q], at most its depth in
// flight; with duration_ns > 0 all stop once that much time has passed.
// *done is the requests completed over all QPs. Cancelling rs[0] stops it.
int gn_bw(struct gn_res **rs, int nqp, int read, size_t size, const uint64_t *raddr, const uint32_t *rkey,
	uint64_t iters, int64_t duration_ns, int64_t deadline_ns, uint64_t *done, int64_t *elapsed_ns);

// gn_wlat is an RDMA WRITE ping-pong like ib_write_lat: each end writes
// the first half of its buffer into the peer's second half (raddr) and
// polls the last byte of its own second half for the peer's write. The
// initiator writes first and fills stamps as gn_lat_ping does; the
// responder answers iters writes.
int gn_wlat(struct gn_res *r, int initiator, size_t size, uint64_t raddr, uint32_t rkey, uint64_t iters,
	int64_t deadline_ns, int64_t *stamps);

#endif
