package verbs

/*
#include <stdlib.h>
#include "gn_verbs.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"syscall"
	"time"
	"unsafe"
)

// MaxQPs bounds the queue pairs one bandwidth loop drives (perftest -q).
const MaxQPs = C.GN_MAX_QPS

// Op is what a bandwidth loop posts.
type Op int

// Operations of Bandwidth.
const (
	OpWrite Op = iota
	OpRead
)

func (o Op) String() string {
	if o == OpRead {
		return "RDMA READ"
	}
	return "RDMA WRITE"
}

// ReadLimits are the device's limits on RDMA READs in flight per QP: as
// responder (max_qp_rd_atom) and as initiator (max_qp_init_rd_atom).
func (d *Device) ReadLimits() (responder, initiator int, err error) {
	var r, i C.int
	if rc := C.gn_query_rd_atom(d.ctx, &r, &i); rc != 0 {
		return 0, 0, fmt.Errorf("ibv_query_device %s: %w", d.name, syscall.Errno(-rc))
	}
	return int(r), int(i), nil
}

// outReads is what a QP of this device takes in flight both ways, as
// perftest's out_reads: the lower limit, at least 1, at most what the
// QP attribute holds.
func (d *Device) outReads() (int, error) {
	r, i, err := d.ReadLimits()
	if err != nil {
		return 0, err
	}
	return min(max(min(r, i), 1), 255), nil
}

// Bandwidth posts op on every QP at once from one thread, as perftest -q N
// drives its QPs: qps[i] toward remotes[i], iters requests of size bytes
// each, at most Depth in flight per QP; with duration > 0 they all run
// for that long instead. The result sums the QPs. Cancelling qps[0]
// stops it.
func Bandwidth(qps []*QP, op Op, remotes []Endpoint, size int, iters uint64, duration, timeout time.Duration) (BW, error) {
	if len(qps) < 1 || len(qps) > MaxQPs || len(remotes) != len(qps) {
		return BW{}, fmt.Errorf("%d queue pairs toward %d endpoints: want 1..%d, one endpoint each", len(qps), len(remotes), MaxQPs)
	}
	if iters < 1 || iters > MaxIterations {
		return BW{}, fmt.Errorf("iterations %d out of range 1..%d", iters, MaxIterations)
	}
	res := make([]*C.struct_gn_res, len(qps))
	raddr := make([]C.uint64_t, len(qps))
	rkey := make([]C.uint32_t, len(qps))
	for i, q := range qps {
		if q.res == nil {
			return BW{}, errors.New("QP is closed")
		}
		if q.cfg.Depth != qps[0].cfg.Depth {
			return BW{}, fmt.Errorf("queue depths differ: %d and %d", qps[0].cfg.Depth, q.cfg.Depth)
		}
		if size < 1 || size > q.cfg.BufferSize || uint64(size) > remotes[i].Len {
			return BW{}, fmt.Errorf("message size %d exceeds the buffers (local %d, remote %d)", size, q.cfg.BufferSize, remotes[i].Len)
		}
		res[i], raddr[i], rkey[i] = q.res, C.uint64_t(remotes[i].Addr), C.uint32_t(remotes[i].RKey)
	}
	read := 0
	if op == OpRead {
		read = 1
	}
	defer qps[0].pinThread()()
	var done C.uint64_t
	var elapsed C.int64_t
	deadline := int64(C.gn_now_ns()) + int64(timeout)
	rc := C.gn_bw(&res[0], C.int(len(qps)), C.int(read), C.size_t(size), &raddr[0], &rkey[0], C.uint64_t(iters),
		C.int64_t(duration), C.int64_t(deadline), &done, &elapsed)
	bw := BW{Bytes: uint64(done) * uint64(size), Messages: uint64(done), Elapsed: time.Duration(elapsed)}
	return bw, rcError(rc, op.String())
}

// WritePing runs iters RDMA WRITE round trips, as ib_write_lat: it writes
// size bytes into the second half of the remote buffer and waits for the
// peer's write into its own; it returns each half round trip, in order.
func (q *QP) WritePing(remote Endpoint, size, iters int, timeout time.Duration) ([]time.Duration, error) {
	if err := q.checkWriteLat(remote, size, iters); err != nil {
		return nil, err
	}
	stamps := make([]int64, iters+1)
	defer q.pinThread()()
	deadline := int64(C.gn_now_ns()) + int64(timeout)
	rc := C.gn_wlat(q.res, 1, C.size_t(size), C.uint64_t(remote.Addr+uint64(size)), C.uint32_t(remote.RKey), C.uint64_t(iters),
		C.int64_t(deadline), (*C.int64_t)(unsafe.Pointer(&stamps[0])))
	if err := rcError(rc, "RDMA WRITE"); err != nil {
		return nil, err
	}
	half := make([]time.Duration, iters)
	for i := range half {
		half[i] = time.Duration(stamps[i+1]-stamps[i]) / 2
	}
	return half, nil
}

// WritePong answers iters of WritePing's writes.
func (q *QP) WritePong(remote Endpoint, size, iters int, timeout time.Duration) error {
	if err := q.checkWriteLat(remote, size, iters); err != nil {
		return err
	}
	defer q.pinThread()()
	deadline := int64(C.gn_now_ns()) + int64(timeout)
	return rcError(C.gn_wlat(q.res, 0, C.size_t(size), C.uint64_t(remote.Addr+uint64(size)), C.uint32_t(remote.RKey), C.uint64_t(iters),
		C.int64_t(deadline), nil), "RDMA WRITE")
}

func (q *QP) checkWriteLat(remote Endpoint, size, iters int) error {
	if q.res == nil {
		return errors.New("QP is closed")
	}
	if size < 1 || 2*size > q.cfg.BufferSize || uint64(2*size) > remote.Len {
		return fmt.Errorf("message size %d needs buffers of %d, have local %d, remote %d", size, 2*size, q.cfg.BufferSize, remote.Len)
	}
	if iters < 1 || iters > MaxLatencyIterations {
		return fmt.Errorf("iterations %d out of range 1..%d", iters, MaxLatencyIterations)
	}
	return nil
}
