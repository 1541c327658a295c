package dcb

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"
	"golang.org/x/sys/unix"

	"github.com/gpunode/gpunode/rdma"
)

// The real kernel answers: loopback has no DCB operations (EOPNOTSUPP),
// and a missing interface is ENODEV, in an error naming it.
func TestKernel(t *testing.T) {
	var r Reader
	if _, err := r.PFCEnabled(context.Background(), "lo"); !errors.Is(err, rdma.ErrNoDCB) {
		t.Errorf("lo: err = %v, want ErrNoDCB", err)
	}
	_, err := r.PFCEnabled(context.Background(), "gpunode-none0")
	if err == nil || errors.Is(err, rdma.ErrNoDCB) || !errors.Is(err, syscall.ENODEV) || !strings.Contains(err.Error(), "gpunode-none0") {
		t.Errorf("missing interface: err = %v", err)
	}
	if _, err := r.PFCEnabled(context.Background(), "an-interface-name-too-long"); err == nil {
		t.Error("an over-long name was sent")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.PFCEnabled(ctx, "lo"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: err = %v", err)
	}
	short := Reader{Timeout: time.Nanosecond}
	if _, err := short.PFCEnabled(context.Background(), "lo"); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("past its timeout: err = %v", err)
	}
}

// attr lays out one netlink attribute by hand, so that tests can also
// write malformed ones.
func attr(typ uint16, payload []byte) []byte {
	b := make([]byte, (4+len(payload)+3)&^3)
	binary.NativeEndian.PutUint16(b[0:], uint16(4+len(payload)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[4:], payload)
	return b
}

func dcbReply(attrs ...[]byte) []byte {
	body := []byte{unix.AF_UNSPEC, cmdIEEEGet, 0, 0}
	for _, a := range attrs {
		body = append(body, a...)
	}
	return body
}

// goodReply is a DCB_CMD_IEEE_GET reply with PFC on priority 3, its
// DCB_ATTR_IEEE flagged NLA_F_NESTED as the kernel sends it.
func goodReply() []byte {
	pfc := make([]byte, 133) // struct ieee_pfc: cap, en, mbc, delay, requests[8], indications[8]
	pfc[0], pfc[1] = 8, 0b00001000
	return dcbReply(attr(attrIfname, []byte("enp1s0\x00")), attr(attrIEEE|netlink.Nested, append(attr(1, make([]byte, 59)), attr(attrIEEEPFC, pfc)...)))
}

// kernel is a fake rtnetlink: it answers each request with what reply
// makes of it, and a second receive with a timeout, as a real socket
// would give once the kernel has nothing more to say.
func kernel(reply func(req netlink.Message) ([]netlink.Message, error)) *netlink.Conn {
	return nltest.Dial(func(reqs []netlink.Message) ([]netlink.Message, error) {
		if len(reqs) == 0 {
			return nil, unix.EAGAIN
		}
		return reply(reqs[0])
	})
}

// answer replies with one message of type typ and body, addressed to
// the request as the kernel does.
func answer(typ netlink.HeaderType, flags netlink.HeaderFlags, body []byte) func(netlink.Message) ([]netlink.Message, error) {
	return func(req netlink.Message) ([]netlink.Message, error) {
		return []netlink.Message{{
			Header: netlink.Header{Type: typ, Flags: flags, Sequence: req.Header.Sequence, PID: req.Header.PID},
			Data:   body,
		}}, nil
	}
}

func errno(e syscall.Errno) func(netlink.Message) ([]netlink.Message, error) {
	return func(req netlink.Message) ([]netlink.Message, error) {
		return nltest.Error(int(e), []netlink.Message{req})
	}
}

func TestQuery(t *testing.T) {
	for _, c := range []struct {
		name  string
		reply func(netlink.Message) ([]netlink.Message, error)
		mask  uint8
		noDCB bool
		errno syscall.Errno
		err   string
	}{
		{name: "pfc on priority 3", reply: answer(unix.RTM_GETDCB, 0, goodReply()), mask: 8},
		{name: "reply to another request", reply: func(req netlink.Message) ([]netlink.Message, error) {
			req.Header.Sequence++
			return answer(unix.RTM_GETDCB, 0, goodReply())(req)
		}, err: "mismatched sequence"},
		{name: "no DCB ops", reply: errno(unix.EOPNOTSUPP), noDCB: true, errno: unix.EOPNOTSUPP, err: "no DCB"},
		{name: "no such device", reply: errno(unix.ENODEV), errno: unix.ENODEV, err: "no such device"},
		{name: "bare ack", reply: errno(0), err: "without a DCB reply"},
		{name: "truncated error", reply: answer(netlink.Error, 0, []byte{1}), err: "not enough data for netlink error code"},
		{name: "nothing for us", reply: answer(unix.RTM_NEWLINK, 0, nil), err: "no DCB reply among 1 messages"},
		{name: "no reply", reply: func(netlink.Message) ([]netlink.Message, error) { return nil, unix.EAGAIN }, errno: unix.EAGAIN, err: "resource temporarily unavailable"},
		{name: "no IEEE nest", reply: answer(unix.RTM_GETDCB, 0, dcbReply(attr(attrIfname, []byte("x\x00")))), noDCB: true, err: "no IEEE"},
		{name: "no PFC in nest", reply: answer(unix.RTM_GETDCB, 0, dcbReply(attr(attrIEEE, attr(1, make([]byte, 8))))), noDCB: true, err: "no IEEE PFC"},
		{name: "short ieee_pfc", reply: answer(unix.RTM_GETDCB, 0, dcbReply(attr(attrIEEE, attr(attrIEEEPFC, []byte{1})))), err: "ieee_pfc of 1 bytes"},
		{name: "wrong command", reply: answer(unix.RTM_GETDCB, 0, []byte{0, 3, 0, 0}), err: "DCB command 3"},
		{name: "truncated dcbmsg", reply: answer(unix.RTM_GETDCB, 0, []byte{0}), err: "truncated dcbmsg"},
		{name: "attribute overruns", reply: answer(unix.RTM_GETDCB, 0, dcbReply([]byte{200, 0, 13, 0})), err: "DCB attributes: invalid attribute"},
		{name: "attribute too short", reply: answer(unix.RTM_GETDCB, 0, dcbReply([]byte{2, 0, 13, 0})), err: "DCB attributes: invalid attribute"},
		{name: "half an attribute header", reply: answer(unix.RTM_GETDCB, 0, dcbReply([]byte{8, 0})), err: "DCB attributes: invalid attribute"},
		{name: "nested attribute overruns", reply: answer(unix.RTM_GETDCB, 0, dcbReply(attr(attrIEEE, []byte{200, 0, 2, 0}))), err: "IEEE attributes: invalid attribute"},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn := kernel(c.reply)
			defer conn.Close()
			mask, err := query(conn, "enp1s0")
			if c.err == "" {
				if err != nil || mask != c.mask {
					t.Fatalf("got %08b %v, want %08b", mask, err, c.mask)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), "enp1s0") || errors.Is(err, rdma.ErrNoDCB) != c.noDCB {
				t.Fatalf("err = %v, want one naming enp1s0 and containing %q (no DCB: %v)", err, c.err, c.noDCB)
			}
			if c.errno != 0 && !errors.Is(err, c.errno) {
				t.Fatalf("err = %v, want one wrapping %v", err, c.errno)
			}
		})
	}
}

// A request the kernel accepts is what TestKernel proves; here its layout.
func TestRequest(t *testing.T) {
	m, err := request("eth0")
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{unix.AF_UNSPEC, cmdIEEEGet, 0, 0, 9, 0, attrIfname, 0, 'e', 't', 'h', '0', 0, 0, 0, 0}
	if m.Header.Type != unix.RTM_GETDCB || m.Header.Flags != netlink.Request || !bytes.Equal(m.Data, want) {
		t.Fatalf("request %+v, want data % x", m, want)
	}
}

// setReply is dcbnl_ieee_set's answer: DCB_ATTR_IEEE holding the
// driver's status byte.
func setReply(status byte) []byte {
	return []byte{unix.AF_UNSPEC, cmdIEEESet, 0, 0, 5, 0, attrIEEE, 0, status, 0, 0, 0}
}

// dcbKernel is a fake rtnetlink with one DCB interface: it answers
// DCB_CMD_IEEE_GET from its struct ieee_pfc and DCB_CMD_IEEE_SET by
// storing the one sent (as mlx5e_dcbnl_ieee_setpfc takes pfc_en) and
// replying with status, or with setAnswer when that is set.
type dcbKernel struct {
	pfc       []byte
	sets      [][]byte
	status    byte
	setAnswer func(netlink.Message) ([]netlink.Message, error)
}

func (k *dcbKernel) conn() *netlink.Conn {
	return kernel(func(req netlink.Message) ([]netlink.Message, error) {
		switch req.Header.Type {
		case unix.RTM_GETDCB:
			return answer(unix.RTM_GETDCB, 0, dcbReply(attr(attrIEEE|netlink.Nested, attr(attrIEEEPFC, k.pfc))))(req)
		case unix.RTM_SETDCB:
			ad, err := netlink.NewAttributeDecoder(req.Data[dcbmsgLen:])
			if err != nil {
				return nil, err
			}
			var pfc []byte
			for ad.Next() {
				if ad.Type() == attrIEEE {
					ad.Nested(func(nad *netlink.AttributeDecoder) error {
						for nad.Next() {
							if nad.Type() == attrIEEEPFC {
								pfc = nad.Bytes()
							}
						}
						return nil
					})
				}
			}
			if err := ad.Err(); err != nil {
				return nil, err
			}
			k.sets = append(k.sets, pfc)
			if k.setAnswer != nil {
				return k.setAnswer(req)
			}
			if k.status == 0 {
				k.pfc = pfc
			}
			return answer(unix.RTM_SETDCB, 0, setReply(k.status))(req)
		}
		return nil, unix.EINVAL
	})
}

// SetPFC changes pfc_en alone: the rest of the struct the driver
// reported goes back as it was, at the length the kernel's policy wants;
// a get afterwards (the same parser) reads the new mask.
func TestSet(t *testing.T) {
	k := &dcbKernel{pfc: make([]byte, ieeePFCSize)}
	k.pfc[0], k.pfc[1], k.pfc[2], k.pfc[4] = 8, 0b1, 1, 0x20 // cap 8, prio 0 on, mbc, delay
	conn := k.conn()
	defer conn.Close()
	if err := set(conn, "enp1s0", 0b00001000); err != nil {
		t.Fatal(err)
	}
	if len(k.sets) != 1 || len(k.sets[0]) != ieeePFCSize {
		t.Fatalf("sent %d sets, the first of %d bytes", len(k.sets), len(k.sets[0]))
	}
	want := make([]byte, ieeePFCSize)
	want[0], want[1], want[2], want[4] = 8, 0b00001000, 1, 0x20
	if !bytes.Equal(k.sets[0], want) {
		t.Errorf("sent % x, want % x", k.sets[0], want)
	}
	if mask, err := query(conn, "enp1s0"); err != nil || mask != 0b00001000 {
		t.Errorf("read back %08b %v", mask, err)
	}

	// A reader's short struct (older kernels, the test's 133 bytes) goes
	// back padded to sizeof(struct ieee_pfc).
	k.pfc = k.pfc[:133]
	if err := set(conn, "enp1s0", 0); err != nil || len(k.sets[1]) != ieeePFCSize {
		t.Errorf("short struct: %v, sent %d bytes", err, len(k.sets[1]))
	}
}

func TestSetRefused(t *testing.T) {
	for _, c := range []struct {
		name   string
		k      dcbKernel
		errno  syscall.Errno
		noDCB  bool
		substr string
	}{
		{name: "driver refuses", k: dcbKernel{pfc: make([]byte, ieeePFCSize), status: 256 - 22}, errno: unix.EINVAL, substr: "driver refused"},
		{name: "no DCB", k: dcbKernel{setAnswer: errno(unix.EOPNOTSUPP)}, noDCB: true, substr: "no DCB"},
		{name: "no status", k: dcbKernel{pfc: make([]byte, ieeePFCSize), setAnswer: answer(unix.RTM_SETDCB, 0, []byte{0, cmdIEEESet, 0, 0})}, substr: "no one-byte status"},
		{name: "reply to another command", k: dcbKernel{pfc: make([]byte, ieeePFCSize), setAnswer: answer(unix.RTM_SETDCB, 0, []byte{0, cmdIEEEGet, 0, 0})}, substr: "DCB command 21"},
		{name: "bare ack", k: dcbKernel{pfc: make([]byte, ieeePFCSize), setAnswer: errno(0)}, substr: "without a DCB reply"},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := c.k
			if k.pfc == nil {
				// No DCB at all: the get already fails.
				conn := kernel(errno(unix.EOPNOTSUPP))
				defer conn.Close()
				err := set(conn, "enp1s0", 8)
				if !errors.Is(err, rdma.ErrNoDCB) {
					t.Fatalf("err = %v, want ErrNoDCB", err)
				}
				return
			}
			conn := k.conn()
			defer conn.Close()
			err := set(conn, "enp1s0", 8)
			if err == nil || !strings.Contains(err.Error(), c.substr) || !strings.Contains(err.Error(), "enp1s0") {
				t.Fatalf("err = %v, want one naming enp1s0 with %q", err, c.substr)
			}
			if c.errno != 0 && !errors.Is(err, c.errno) {
				t.Errorf("err = %v, want %v", err, c.errno)
			}
		})
	}
}

// The real kernel: setting PFC on loopback, which has no DCB, is
// ErrNoDCB, and a missing interface ENODEV.
func TestKernelSet(t *testing.T) {
	var r Reader
	if err := r.SetPFC(context.Background(), "lo", 8); !errors.Is(err, rdma.ErrNoDCB) {
		t.Errorf("lo: err = %v, want ErrNoDCB", err)
	}
	if err := r.SetPFC(context.Background(), "gpunode-none0", 8); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("missing interface: err = %v, want ENODEV", err)
	}
}

// appKernel is a fake rtnetlink whose one interface has a DCB
// application table, kept as dcb_ieee_setapp and dcb_ieee_delapp keep
// it (entries keyed by selector, protocol and priority); other
// selectors' entries (an ethertype) are there too and never touched.
type appKernel struct {
	apps map[[dcbAppLen]byte]bool
	cmds []uint8
}

func (k *appKernel) conn() *netlink.Conn {
	return kernel(func(req netlink.Message) ([]netlink.Message, error) {
		if req.Header.Type == unix.RTM_GETDCB {
			var table []byte
			for a := range k.apps {
				table = append(table, attr(attrIEEEApp, a[:])...)
			}
			return answer(unix.RTM_GETDCB, 0, dcbReply(attr(attrIEEE|netlink.Nested, append(attr(attrIEEEPFC, make([]byte, ieeePFCSize)), attr(attrIEEEAppTable|netlink.Nested, table)...))))(req)
		}
		cmd := req.Data[1]
		k.cmds = append(k.cmds, cmd)
		ad, err := netlink.NewAttributeDecoder(req.Data[dcbmsgLen:])
		if err != nil {
			return nil, err
		}
		for ad.Next() {
			if ad.Type() != attrIEEE {
				continue
			}
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					nad.Nested(func(tad *netlink.AttributeDecoder) error {
						for tad.Next() {
							var a [dcbAppLen]byte
							copy(a[:], tad.Bytes())
							if cmd == cmdIEEESet {
								k.apps[a] = true
							} else {
								delete(k.apps, a)
							}
						}
						return nil
					})
				}
				return nil
			})
		}
		return answer(unix.RTM_SETDCB, 0, []byte{unix.AF_UNSPEC, cmd, 0, 0, 5, 0, attrIEEE, 0, 0, 0, 0, 0})(req)
	})
}

// The DSCP map is read from the application table and set to exactly
// what is asked: stale entries deleted first, missing ones added, other
// selectors' entries left alone; an empty map deletes every DSCP entry
// (mlx5 then trusts PCP).
func TestDSCPMap(t *testing.T) {
	ether := [dcbAppLen]byte{1, 3, 0x15, 0x89} // ethertype 0x8915 (RoCE v1) -> 3
	k := &appKernel{apps: map[[dcbAppLen]byte]bool{ether: true, dcbApp(24, 3): true, dcbApp(46, 5): true}}
	conn := k.conn()
	defer conn.Close()
	m, err := getDSCP(conn, "enp1s0")
	if err != nil || len(m) != 2 || m[24] != 3 || m[46] != 5 {
		t.Fatalf("map %v, %v", m, err)
	}
	if err := setDSCP(conn, "enp1s0", map[uint8]uint8{24: 3, 46: 6, 26: 3}); err != nil {
		t.Fatal(err)
	}
	if m, _ := getDSCP(conn, "enp1s0"); len(m) != 3 || m[46] != 6 || m[26] != 3 || m[24] != 3 {
		t.Errorf("after set: %v", m)
	}
	if len(k.cmds) != 2 || k.cmds[0] != cmdIEEEDel || k.cmds[1] != cmdIEEESet {
		t.Errorf("commands %v, want delete then set", k.cmds)
	}
	if err := setDSCP(conn, "enp1s0", nil); err != nil {
		t.Fatal(err)
	}
	if m, _ := getDSCP(conn, "enp1s0"); len(m) != 0 || !k.apps[ether] || len(k.apps) != 1 {
		t.Errorf("after clearing: %v, table %v", m, k.apps)
	}
	k.cmds = nil
	if err := setDSCP(conn, "enp1s0", nil); err != nil || len(k.cmds) != 0 {
		t.Errorf("nothing to change sent %v: %v", k.cmds, err)
	}
}

// The real kernel: loopback has no DCB.
func TestKernelDSCP(t *testing.T) {
	var r Reader
	if _, err := r.DSCPMap(context.Background(), "lo"); !errors.Is(err, rdma.ErrNoDCB) {
		t.Errorf("lo: err = %v, want ErrNoDCB", err)
	}
	if err := r.SetDSCPMap(context.Background(), "lo", map[uint8]uint8{24: 3}); !errors.Is(err, rdma.ErrNoDCB) {
		t.Errorf("lo: err = %v, want ErrNoDCB", err)
	}
}
