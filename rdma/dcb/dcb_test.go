package dcb

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gpunode/gpunode/rdma"
)

// The real kernel answers: loopback has no DCB operations (EOPNOTSUPP),
// and a missing interface is an error naming it.
func TestKernel(t *testing.T) {
	var r Reader
	if _, err := r.PFCEnabled(context.Background(), "lo"); !errors.Is(err, rdma.ErrNoDCB) {
		t.Errorf("lo: err = %v, want ErrNoDCB", err)
	}
	_, err := r.PFCEnabled(context.Background(), "gpunode-none0")
	if err == nil || errors.Is(err, rdma.ErrNoDCB) || !strings.Contains(err.Error(), "gpunode-none0") {
		t.Errorf("missing interface: err = %v", err)
	}
	if _, err := r.PFCEnabled(context.Background(), "an-interface-name-too-long"); err == nil {
		t.Error("an over-long name was sent")
	}
}

func attr(typ uint16, payload []byte) []byte {
	b := make([]byte, align4(4+len(payload)))
	binary.NativeEndian.PutUint16(b[0:], uint16(4+len(payload)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[4:], payload)
	return b
}

func msg(typ uint16, seq uint32, body []byte) []byte {
	b := make([]byte, nlmsgHdrLen+len(body))
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint32(b[8:], seq)
	copy(b[nlmsgHdrLen:], body)
	return b
}

func dcbReply(attrs ...[]byte) []byte {
	body := []byte{unix.AF_UNSPEC, cmdIEEEGet, 0, 0}
	for _, a := range attrs {
		body = append(body, a...)
	}
	return body
}

func errMsg(errno syscall.Errno) []byte {
	b := make([]byte, 4+nlmsgHdrLen)
	binary.NativeEndian.PutUint32(b, uint32(-int32(errno)))
	return b
}

func TestParseReply(t *testing.T) {
	pfc := make([]byte, 133) // struct ieee_pfc: cap, en, mbc, delay, requests[8], indications[8]
	pfc[0], pfc[1] = 8, 0b00001000
	good := dcbReply(attr(attrIfname, []byte("enp1s0\x00")), attr(attrIEEE|0x8000, append(attr(1, make([]byte, 59)), attr(attrIEEEPFC, pfc)...)))
	for _, c := range []struct {
		name  string
		b     []byte
		mask  uint8
		done  bool
		noDCB bool
		err   string
	}{
		{name: "pfc on priority 3", b: msg(unix.RTM_GETDCB, 7, good), mask: 8, done: true},
		{name: "other sequence first", b: append(msg(unix.RTM_GETDCB, 6, dcbReply()), msg(unix.RTM_GETDCB, 7, good)...), mask: 8, done: true},
		{name: "only a stray message", b: msg(unix.RTM_GETDCB, 6, good)},
		{name: "no DCB ops", b: msg(unix.NLMSG_ERROR, 7, errMsg(unix.EOPNOTSUPP)), noDCB: true, err: "no DCB"},
		{name: "no such device", b: msg(unix.NLMSG_ERROR, 7, errMsg(unix.ENODEV)), err: "no such device"},
		{name: "bare ack", b: msg(unix.NLMSG_ERROR, 7, errMsg(0)), err: "without a DCB reply"},
		{name: "truncated error", b: msg(unix.NLMSG_ERROR, 7, []byte{1}), err: "truncated netlink error"},
		{name: "no IEEE nest", b: msg(unix.RTM_GETDCB, 7, dcbReply(attr(attrIfname, []byte("x\x00")))), noDCB: true, err: "no IEEE"},
		{name: "no PFC in nest", b: msg(unix.RTM_GETDCB, 7, dcbReply(attr(attrIEEE, attr(1, make([]byte, 8))))), noDCB: true, err: "no IEEE PFC"},
		{name: "short ieee_pfc", b: msg(unix.RTM_GETDCB, 7, dcbReply(attr(attrIEEE, attr(attrIEEEPFC, []byte{1})))), err: "ieee_pfc of 1 bytes"},
		{name: "wrong command", b: msg(unix.RTM_GETDCB, 7, []byte{0, 3, 0, 0}), err: "DCB command 3"},
		{name: "truncated dcbmsg", b: msg(unix.RTM_GETDCB, 7, []byte{0}), err: "truncated dcbmsg"},
		{name: "attribute overruns", b: msg(unix.RTM_GETDCB, 7, dcbReply([]byte{200, 0, 13, 0})), err: "attribute length 200"},
		{name: "attribute too short", b: msg(unix.RTM_GETDCB, 7, dcbReply([]byte{2, 0, 13, 0})), err: "attribute length 2"},
		{name: "half an attribute header", b: msg(unix.RTM_GETDCB, 7, dcbReply([]byte{8, 0})), err: "truncated attribute header"},
		{name: "truncated header", b: []byte{1, 2, 3}, err: "truncated netlink header"},
		{name: "message longer than datagram", b: msg(unix.RTM_GETDCB, 7, good)[:40], err: "outside 16..40"},
		{name: "length below header", b: append([]byte{4, 0, 0, 0}, make([]byte, 12)...), err: "outside 16..16"},
	} {
		t.Run(c.name, func(t *testing.T) {
			mask, done, err := parseReply(c.b, 7)
			if c.err == "" {
				if err != nil || mask != c.mask || done != c.done {
					t.Fatalf("got %08b %v %v, want %08b %v", mask, done, err, c.mask, c.done)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.err) || errors.Is(err, rdma.ErrNoDCB) != c.noDCB {
				t.Fatalf("err = %v, want one containing %q (no DCB: %v)", err, c.err, c.noDCB)
			}
		})
	}
}

// A request the kernel accepts is what TestKernel proves; here its layout.
func TestRequest(t *testing.T) {
	b := request("eth0", 9)
	if len(b)%4 != 0 || binary.NativeEndian.Uint32(b) != uint32(len(b)) || b[17] != cmdIEEEGet || string(b[24:29]) != "eth0\x00" {
		t.Fatalf("request % x", b)
	}
}
