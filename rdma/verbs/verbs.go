// Package verbs is a small binding to libibverbs for the RDMA probes:
// reliable-connected queue pairs, RDMA WRITE bandwidth and SEND/RECV
// ping-pong latency measured as perftest's ib_write_bw and ib_send_lat
// measure them, and its other tests (kinds.go): RDMA READ bandwidth,
// RDMA WRITE latency and several QPs in one loop. The library is loaded with dlopen at run time, so a host
// without rdma-core (or without RDMA in its kernel) still runs the agent
// and learns why probes are unavailable from Load and Devices.
package verbs

/*
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include "gn_verbs.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

var (
	// ErrNoLibrary: libibverbs.so.1 could not be loaded (rdma-core is not
	// installed).
	ErrNoLibrary = errors.New("libibverbs.so.1 not available")
	// ErrNoKernelSupport: the kernel has no RDMA (ibv_get_device_list
	// fails with ENOSYS).
	ErrNoKernelSupport = errors.New("the kernel has no RDMA support")
	// ErrNoDevices: RDMA works but no device is present.
	ErrNoDevices = errors.New("no RDMA devices")
)

// Limits that bound a probe's memory and time.
const (
	MaxMessageSize = 64 << 20
	MaxDepth       = 1024
	MaxIterations  = 100_000_000
	// MaxLatencyIterations bounds the timestamp array (8 bytes each).
	MaxLatencyIterations = 1_000_000
)

// Load opens libibverbs.so.1. It is cheap to call again.
func Load() error {
	var buf [256]C.char
	if C.gn_load(&buf[0], C.size_t(len(buf))) != 0 {
		return fmt.Errorf("%w: %s", ErrNoLibrary, C.GoString(&buf[0]))
	}
	return nil
}

// deviceList is the verbs device list (ibv_get_device_list) for use,
// freed when use returns.
func deviceList(use func(devs []*C.struct_ibv_device) error) error {
	if err := Load(); err != nil {
		return err
	}
	var n, errnum C.int
	list := C.gn_device_list(&n, &errnum)
	if list == nil {
		if syscall.Errno(errnum) == syscall.ENOSYS {
			return ErrNoKernelSupport
		}
		return fmt.Errorf("ibv_get_device_list: %w", syscall.Errno(errnum))
	}
	defer C.gn_free_device_list(list)
	return use(unsafe.Slice(list, int(n)))
}

// Devices lists the verbs devices by name. With no kernel support it
// returns ErrNoKernelSupport; with none present, an empty list and nil.
func Devices() ([]string, error) {
	var names []string
	err := deviceList(func(devs []*C.struct_ibv_device) error {
		names = make([]string, 0, len(devs))
		for _, d := range devs {
			names = append(names, C.GoString(C.gn_device_name(d)))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return names, nil
}

// Device is an open verbs device.
type Device struct {
	name string
	ctx  *C.struct_ibv_context
}

// OpenDevice opens the named device.
func OpenDevice(name string) (*Device, error) {
	var dev *Device
	err := deviceList(func(devs []*C.struct_ibv_device) error {
		for _, d := range devs {
			if C.GoString(C.gn_device_name(d)) != name {
				continue
			}
			ctx, err := C.gn_open_device(d)
			if ctx == nil {
				return fmt.Errorf("ibv_open_device %s: %w", name, errnoOr(err))
			}
			dev = &Device{name: name, ctx: ctx}
			return nil
		}
		if len(devs) == 0 {
			return fmt.Errorf("open %s: %w", name, ErrNoDevices)
		}
		return fmt.Errorf("open %s: no such verbs device", name)
	})
	if err != nil {
		return nil, err
	}
	return dev, nil
}

func errnoOr(err error) error {
	if err == nil {
		return syscall.EIO
	}
	return err
}

// Name is the device's name ("rxe0", "mlx5_0").
func (d *Device) Name() string { return d.name }

// Close closes the device; QPs made on it must be closed first.
func (d *Device) Close() error {
	if d.ctx == nil {
		return nil
	}
	rc := C.gn_close_device(d.ctx)
	d.ctx = nil
	if rc != 0 {
		return fmt.Errorf("ibv_close_device %s: %w", d.name, syscall.Errno(rc))
	}
	return nil
}

// Link layers of ports.
const (
	LinkLayerInfiniBand = "InfiniBand"
	LinkLayerEthernet   = "Ethernet"
)

// PortAttr is what ibv_query_port reports that a probe needs.
type PortAttr struct {
	// Active is IBV_PORT_ACTIVE.
	Active bool
	// ActiveMTU is the IBV_MTU_* enum (1 = 256 ... 5 = 4096).
	ActiveMTU int
	LID       uint16
	LinkLayer string
}

// MTUBytes converts an IBV_MTU_* value to bytes (0 when unknown).
func MTUBytes(mtu int) int {
	if mtu < 1 || mtu > 5 {
		return 0
	}
	return 128 << mtu
}

// Port queries a port (numbered from 1).
func (d *Device) Port(port int) (PortAttr, error) {
	if port < 1 || port > 255 {
		return PortAttr{}, fmt.Errorf("port %d out of range", port)
	}
	var a C.struct_ibv_port_attr
	if rc := C.gn_query_port(d.ctx, C.uint8_t(port), &a); rc != 0 {
		return PortAttr{}, fmt.Errorf("ibv_query_port %s/%d: %w", d.name, port, syscall.Errno(rc))
	}
	p := PortAttr{Active: a.state == C.IBV_PORT_ACTIVE, ActiveMTU: int(a.active_mtu), LID: uint16(a.lid), LinkLayer: LinkLayerInfiniBand}
	if a.link_layer == C.IBV_LINK_LAYER_ETHERNET {
		p.LinkLayer = LinkLayerEthernet
	}
	return p, nil
}

// ErrEmptyGID: the GID table entry holds no address. ibv_query_gid
// reports an emptied entry (its address removed since discovery read
// the table) as success with an all-zero GID; a QP addressed from it
// never connects.
var ErrEmptyGID = errors.New("GID table entry is empty")

// GID reads one entry of a port's GID table; an empty entry is
// ErrEmptyGID.
func (d *Device) GID(port, index int) ([16]byte, error) {
	var g [16]byte
	if port < 1 || port > 255 || index < 0 {
		return g, fmt.Errorf("GID %d of port %d out of range", index, port)
	}
	var raw [16]C.uint8_t
	if rc := C.gn_query_gid(d.ctx, C.uint8_t(port), C.int(index), &raw[0]); rc != 0 {
		return g, fmt.Errorf("ibv_query_gid %s/%d/%d: %w", d.name, port, index, syscall.Errno(rc))
	}
	for i := range raw {
		g[i] = byte(raw[i])
	}
	if g == ([16]byte{}) {
		return g, fmt.Errorf("%s port %d GID %d: %w", d.name, port, index, ErrEmptyGID)
	}
	return g, nil
}

// Endpoint is what the other end of a QP needs to connect to it and to
// write into its buffer.
type Endpoint struct {
	QPN uint32 `json:"qpn"`
	PSN uint32 `json:"psn"`
	// GID is used when Global (RoCE); LID on InfiniBand.
	GID    [16]byte `json:"gid"`
	Global bool     `json:"global"`
	LID    uint16   `json:"lid"`
	// MTU is the port's active MTU (IBV_MTU_*); the path uses the lower
	// of both ends.
	MTU  int    `json:"mtu"`
	Addr uint64 `json:"addr"`
	RKey uint32 `json:"rkey"`
	// Len is the registered buffer's size: the most the peer may write.
	Len uint64 `json:"len"`
	// OutReads is the RDMA READs in flight this end takes as responder
	// (QPConfig.Reads; 0 when not set, which means 1).
	OutReads int `json:"out_reads,omitempty"`
}

// QPConfig chooses the port, addressing and buffer of a queue pair.
type QPConfig struct {
	Port int
	// GIDIndex is the source GID (RoCE: the RoCE v2 IPv4 one); -1 means
	// InfiniBand addressing by LID.
	GIDIndex int
	// BufferSize is the registered buffer: the message size for
	// bandwidth, twice it for latency (send half, receive half).
	BufferSize int
	// Depth is the send and receive queue depth.
	Depth int
	// PSN is this end's starting packet sequence number (24 bits).
	PSN uint32
	// NUMANode is the HCA's NUMA node, where the buffer and the polling
	// thread go (best effort; QP.Placement says how it went); -1 when
	// unknown, which places nothing.
	NUMANode int
	// ServiceLevel (0-15) and TrafficClass (0-255, the GRH's: on RoCE v2
	// the IP header's DSCP and ECN bits) put the QP's traffic on a
	// class: lossless RoCE traffic lives on a PFC priority, which the
	// switch and NIC map from the DSCP or the SL.
	ServiceLevel uint8
	TrafficClass uint8
	// Reads allows as many RDMA READs in flight as the device takes
	// (ReadLimits), for the READ test; otherwise one, the least.
	Reads bool
	// GPU, when set, is registered as the buffer instead of host memory
	// (BufferSize must fit in it; NUMANode places nothing then). It must
	// outlive the QP.
	GPU *GPUMemory
}

// Placement says where a QP's buffer and polling thread ended up relative
// to the HCA's NUMA node. Placing them is best effort (a container may
// forbid mbind, its cpuset may exclude the node), so it is reported, not
// enforced.
type Placement struct {
	// NUMANode is the HCA's node; -1 when unknown (nothing was placed).
	NUMANode int `json:"numa_node"`
	// BufferNode is the node of the buffer's first page; -1 when the
	// kernel does not say.
	BufferNode int `json:"buffer_node"`
	// ThreadCPUs is the CPU list the polling thread was pinned to (the
	// node's CPUs this process may use); empty when it was not pinned.
	ThreadCPUs string `json:"thread_cpus,omitempty"`
	// Problems says why placement fell short.
	Problems []string `json:"problems,omitempty"`
}

// QP is a reliable-connected queue pair with its buffer, registered once;
// Close releases everything.
type QP struct {
	// mu orders Cancel against Close; the loops run without it.
	mu    sync.Mutex
	dev   *Device
	cfg   QPConfig
	res   *C.struct_gn_res
	local Endpoint
	// placement is filled in by NewQP (the buffer) and the loops (the
	// thread), which run on one goroutine at a time.
	placement Placement
	relaxed   bool
	// threadCPUs and threadProblem are the last loop's pinning.
	threadCPUs, threadProblem string
	// memPath is how GPU memory was registered (PathDMABuf, PathPeerMem;
	// "" for host memory), dmabufRefused why its dma-buf was not.
	memPath, dmabufRefused string
}

// MemoryPath is how the QP's GPU memory was registered: PathDMABuf or
// PathPeerMem; "" for host memory.
func (q *QP) MemoryPath() string { return q.memPath }

// DMABufRefused is why ibv_reg_dmabuf_mr refused the GPU memory's
// dma-buf before the address was registered instead ("" when it was not
// tried or worked).
func (q *QP) DMABufRefused() string { return q.dmabufRefused }

// NewQP creates the QP and registers its buffer.
func (d *Device) NewQP(cfg QPConfig) (*QP, error) {
	if cfg.BufferSize < 1 || cfg.BufferSize > 2*MaxMessageSize {
		return nil, fmt.Errorf("buffer size %d out of range 1..%d", cfg.BufferSize, 2*MaxMessageSize)
	}
	if cfg.Depth < 1 || cfg.Depth > MaxDepth {
		return nil, fmt.Errorf("queue depth %d out of range 1..%d", cfg.Depth, MaxDepth)
	}
	attr, err := d.Port(cfg.Port)
	if err != nil {
		return nil, err
	}
	if !attr.Active {
		return nil, fmt.Errorf("%s port %d is not ACTIVE", d.name, cfg.Port)
	}
	local := Endpoint{LID: attr.LID, MTU: attr.ActiveMTU, PSN: cfg.PSN & 0xffffff}
	if cfg.GIDIndex >= 0 {
		if local.GID, err = d.GID(cfg.Port, cfg.GIDIndex); err != nil {
			return nil, err
		}
		local.Global = true
	} else if attr.LinkLayer == LinkLayerEthernet {
		return nil, fmt.Errorf("%s port %d is Ethernet (RoCE): a GID index is needed", d.name, cfg.Port)
	}
	// C memory: the struct is handed to the verbs loops for their whole
	// life, which Go memory may not be.
	res := (*C.struct_gn_res)(C.calloc(1, C.size_t(unsafe.Sizeof(C.struct_gn_res{}))))
	if res == nil {
		return nil, errors.New("allocate QP resources: out of memory")
	}
	var stage *C.char
	var rc C.int
	if cfg.GPU != nil {
		if cfg.BufferSize > cfg.GPU.Size() {
			C.free(unsafe.Pointer(res))
			return nil, fmt.Errorf("buffer size %d exceeds the GPU memory (%d)", cfg.BufferSize, cfg.GPU.Size())
		}
		ext := cfg.GPU.extmem()
		rc = C.gn_res_create_ext(res, d.ctx, C.uint8_t(cfg.Port), &ext, C.uint32_t(cfg.Depth), &stage)
	} else {
		rc = C.gn_res_create(res, d.ctx, C.uint8_t(cfg.Port), C.size_t(cfg.BufferSize), C.uint32_t(cfg.Depth), C.int(cfg.NUMANode), &stage)
	}
	if rc != 0 {
		C.free(unsafe.Pointer(res))
		return nil, setupError(d.name, C.GoString(stage), syscall.Errno(-rc))
	}
	local.QPN = uint32(res.qp.qp_num)
	local.Addr = uint64(uintptr(res.buf))
	local.RKey = uint32(res.mr.rkey)
	local.Len = uint64(cfg.BufferSize)
	if cfg.Reads {
		if local.OutReads, err = d.outReads(); err != nil {
			C.gn_res_destroy(res)
			C.free(unsafe.Pointer(res))
			return nil, err
		}
	}
	q := &QP{dev: d, cfg: cfg, res: res, local: local, relaxed: res.relaxed_ordering != 0,
		memPath: memPath(res.mem_path), dmabufRefused: dmabufRefusal(res.dmabuf_errno)}
	q.placement = Placement{NUMANode: max(cfg.NUMANode, -1), BufferNode: int(res.buf_node)}
	if cfg.NUMANode >= 0 {
		if e := syscall.Errno(res.mbind_errno); e != 0 {
			q.placement.Problems = append(q.placement.Problems, fmt.Sprintf("buffer not placed on node %d: mbind: %v", cfg.NUMANode, e))
		} else if q.placement.BufferNode >= 0 && q.placement.BufferNode != cfg.NUMANode {
			q.placement.Problems = append(q.placement.Problems, fmt.Sprintf("buffer on node %d, not the HCA's node %d (no free memory there?)", q.placement.BufferNode, cfg.NUMANode))
		}
	}
	return q, nil
}

// setupError wraps a failed setup step; a memory registration refused
// for lack of lockable memory says how to get it, since that is the
// usual cause in containers and under systemd.
func setupError(dev, stage string, errno syscall.Errno) error {
	err := fmt.Errorf("%s: %s: %w", dev, stage, errno)
	if stage == "ibv_reg_mr" && (errno == syscall.ENOMEM || errno == syscall.EPERM) {
		return fmt.Errorf("%w (memory registration pins pages: raise the locked-memory limit, "+
			"ulimit -l / LimitMEMLOCK=infinity / the container runtime's memlock ulimit, or grant CAP_IPC_LOCK)", err)
	}
	return err
}

// Placement says where the buffer and, after a measurement, the polling
// thread ended up.
func (q *QP) Placement() Placement {
	p := q.placement
	p.Problems = slices.Clone(p.Problems)
	p.ThreadCPUs = q.threadCPUs
	if q.threadProblem != "" {
		p.Problems = append(p.Problems, q.threadProblem)
	}
	return p
}

// RelaxedOrdering reports whether the buffer was registered with
// IBV_ACCESS_RELAXED_ORDERING, as perftest registers it. It goes through
// ibv_reg_mr_iova2, which drops the flag where the kernel cannot take
// it, so true means asked for, not necessarily honoured by the device.
func (q *QP) RelaxedOrdering() bool { return q.relaxed }

// Local is this end's endpoint, for the peer.
func (q *QP) Local() Endpoint { return q.local }

// Close destroys the QP, CQs, MR and PD and frees the buffer. Safe to
// call twice.
func (q *QP) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.res == nil {
		return
	}
	C.gn_res_destroy(q.res)
	C.free(unsafe.Pointer(q.res))
	q.res = nil
}

// Connect moves the QP to ready-to-send toward remote.
func (q *QP) Connect(remote Endpoint) error {
	if q.res == nil {
		return errors.New("QP is closed")
	}
	if remote.Global != q.local.Global {
		return fmt.Errorf("addressing differs: local global=%v, remote global=%v", q.local.Global, remote.Global)
	}
	mtu := min(q.local.MTU, remote.MTU)
	if MTUBytes(mtu) == 0 {
		return fmt.Errorf("no common path MTU (local %d, remote %d)", q.local.MTU, remote.MTU)
	}
	var dgid [16]C.uint8_t
	for i, b := range remote.GID {
		dgid[i] = C.uint8_t(b)
	}
	global := 0
	if remote.Global {
		global = 1
	}
	var stage *C.char
	// READs in flight: this end's as responder; as initiator no more
	// than the peer takes (perftest's out_reads, exchanged the same way).
	dest := max(q.local.OutReads, 1)
	rd := min(dest, max(remote.OutReads, 1))
	rc := C.gn_connect_rd(q.res, C.uint8_t(q.cfg.Port), C.int(q.cfg.GIDIndex), C.int(global), &dgid[0],
		C.uint16_t(remote.LID), C.uint32_t(remote.QPN), C.uint32_t(remote.PSN&0xffffff), C.uint32_t(q.local.PSN), C.int(mtu),
		C.uint8_t(q.cfg.ServiceLevel), C.uint8_t(q.cfg.TrafficClass), C.uint8_t(rd), C.uint8_t(dest), &stage)
	if rc != 0 {
		return fmt.Errorf("%s: %s: %w", q.dev.name, C.GoString(stage), syscall.Errno(-rc))
	}
	return nil
}

// BW is the result of a bandwidth run.
type BW struct {
	// Bytes written and the time from the first post to the last
	// completion.
	Bytes    uint64        `json:"bytes"`
	Messages uint64        `json:"messages"`
	Elapsed  time.Duration `json:"elapsed_ns"`
}

// BytesPerSecond is the average bandwidth.
func (b BW) BytesPerSecond() float64 {
	if b.Elapsed <= 0 {
		return 0
	}
	return float64(b.Bytes) / b.Elapsed.Seconds()
}

// WriteBW writes size bytes iters times into the remote buffer, at most
// Depth outstanding; with duration > 0 it writes for that long instead
// (iters bounds it). timeout bounds the call.
func (q *QP) WriteBW(remote Endpoint, size int, iters uint64, duration, timeout time.Duration) (BW, error) {
	if q.res == nil {
		return BW{}, errors.New("QP is closed")
	}
	if size < 1 || size > q.cfg.BufferSize || uint64(size) > remote.Len {
		return BW{}, fmt.Errorf("message size %d exceeds the buffers (local %d, remote %d)", size, q.cfg.BufferSize, remote.Len)
	}
	if iters < 1 || iters > MaxIterations {
		return BW{}, fmt.Errorf("iterations %d out of range 1..%d", iters, MaxIterations)
	}
	defer q.pinThread()()
	var done C.uint64_t
	var elapsed C.int64_t
	deadline := int64(C.gn_now_ns()) + int64(timeout)
	rc := C.gn_write_bw(q.res, C.size_t(size), C.uint64_t(remote.Addr), C.uint32_t(remote.RKey), C.uint64_t(iters),
		C.int64_t(duration), C.int64_t(deadline), &done, &elapsed)
	res := BW{Bytes: uint64(done) * uint64(size), Messages: uint64(done), Elapsed: time.Duration(elapsed)}
	if err := rcError(rc, "RDMA WRITE"); err != nil {
		return res, err
	}
	return res, nil
}

// PostRecv posts the first receive of a latency run: both ends must do
// it before telling the other they are ready.
func (q *QP) PostRecv(size int) error {
	if q.res == nil {
		return errors.New("QP is closed")
	}
	if size < 1 || 2*size > q.cfg.BufferSize {
		return fmt.Errorf("message size %d needs a buffer of %d, have %d", size, 2*size, q.cfg.BufferSize)
	}
	return rcError(C.gn_post_recv(q.res, C.size_t(size)), "post receive")
}

// Ping runs iters SEND/RECV round trips and returns each one's half round
// trip (perftest's latency), in order.
func (q *QP) Ping(size, iters int, timeout time.Duration) ([]time.Duration, error) {
	if q.res == nil {
		return nil, errors.New("QP is closed")
	}
	if iters < 1 || iters > MaxLatencyIterations {
		return nil, fmt.Errorf("iterations %d out of range 1..%d", iters, MaxLatencyIterations)
	}
	stamps := make([]int64, iters+1)
	defer q.pinThread()()
	deadline := int64(C.gn_now_ns()) + int64(timeout)
	rc := C.gn_lat_ping(q.res, C.size_t(size), C.uint64_t(iters), C.int64_t(deadline), (*C.int64_t)(unsafe.Pointer(&stamps[0])))
	if err := rcError(rc, "SEND/RECV"); err != nil {
		return nil, err
	}
	half := make([]time.Duration, iters)
	for i := range half {
		half[i] = time.Duration(stamps[i+1]-stamps[i]) / 2
	}
	return half, nil
}

// Pong answers iters pings.
func (q *QP) Pong(size, iters int, timeout time.Duration) error {
	if q.res == nil {
		return errors.New("QP is closed")
	}
	if iters < 1 || iters > MaxLatencyIterations {
		return fmt.Errorf("iterations %d out of range 1..%d", iters, MaxLatencyIterations)
	}
	defer q.pinThread()()
	deadline := int64(C.gn_now_ns()) + int64(timeout)
	return rcError(C.gn_lat_pong(q.res, C.size_t(size), C.uint64_t(iters), C.int64_t(deadline)), "SEND/RECV")
}

// rcError turns a loop's result into an error: negative is an errno,
// positive a failed completion's status.
func rcError(rc C.int, what string) error {
	switch {
	case rc == 0:
		return nil
	case rc < 0:
		if syscall.Errno(-rc) == syscall.ETIMEDOUT {
			return fmt.Errorf("%s: timed out", what)
		}
		return fmt.Errorf("%s: %w", what, syscall.Errno(-rc))
	default:
		return fmt.Errorf("%s: completion failed: %s", what, WCStatus(int(rc)))
	}
}

// WCStatus names a work completion status (enum ibv_wc_status).
func WCStatus(s int) string {
	names := map[int]string{
		C.IBV_WC_LOC_LEN_ERR:        "local length error",
		C.IBV_WC_LOC_QP_OP_ERR:      "local QP operation error",
		C.IBV_WC_LOC_PROT_ERR:       "local protection error",
		C.IBV_WC_WR_FLUSH_ERR:       "work request flushed",
		C.IBV_WC_REM_INV_REQ_ERR:    "remote invalid request",
		C.IBV_WC_REM_ACCESS_ERR:     "remote access error",
		C.IBV_WC_REM_OP_ERR:         "remote operation error",
		C.IBV_WC_RETRY_EXC_ERR:      "transport retry counter exceeded (peer gone?)",
		C.IBV_WC_RNR_RETRY_EXC_ERR:  "receiver-not-ready retry counter exceeded",
		C.IBV_WC_FATAL_ERR:          "fatal error",
		C.IBV_WC_RESP_TIMEOUT_ERR:   "response timeout",
		C.IBV_WC_GENERAL_ERR:        "general error",
		C.IBV_WC_REM_ABORT_ERR:      "remote aborted",
		C.IBV_WC_BAD_RESP_ERR:       "bad response",
		C.IBV_WC_MW_BIND_ERR:        "memory window bind error",
		C.IBV_WC_LOC_EEC_OP_ERR:     "local EEC operation error",
		C.IBV_WC_LOC_RDD_VIOL_ERR:   "local RDD violation",
		C.IBV_WC_REM_INV_RD_REQ_ERR: "remote invalid RD request",
		C.IBV_WC_INV_EECN_ERR:       "invalid EEC number",
		C.IBV_WC_INV_EEC_STATE_ERR:  "invalid EEC state",
		C.IBV_WC_TM_ERR:             "tag matching error",
		C.IBV_WC_TM_RNDV_INCOMPLETE: "tag matching rendezvous incomplete",
	}
	if n := names[s]; n != "" {
		return fmt.Sprintf("%s (status %d)", n, s)
	}
	return fmt.Sprintf("status %d", s)
}

// Cancel stops a WriteBW, Ping, Pong, WritePing, WritePong or a Bandwidth
// whose first QP this is, running on another goroutine (it
// returns an error wrapping syscall.ECANCELED); the QP is then only good
// for Close. Safe to call concurrently with the loop, not with Close.
func (q *QP) Cancel() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.res != nil {
		C.gn_cancel(q.res)
	}
}
