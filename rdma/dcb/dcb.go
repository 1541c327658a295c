// Package dcb reads the priority flow control (PFC) state of a network
// interface from the kernel's Data Center Bridging netlink interface
// (rtnetlink RTM_GETDCB, DCB_CMD_IEEE_GET): what `mlnx_qos -i <if>` and
// `dcb pfc show dev <if>` print. sysfs has no upstream PFC attribute, so
// this is the one source that works for every DCB-capable driver.
package dcb

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gpunode/gpunode/rdma"
)

// From linux/dcbnl.h.
const (
	cmdIEEEGet   = 21 // DCB_CMD_IEEE_GET
	attrIfname   = 1  // DCB_ATTR_IFNAME
	attrIEEE     = 13 // DCB_ATTR_IEEE
	attrIEEEPFC  = 2  // DCB_ATTR_IEEE_PFC, struct ieee_pfc
	nlaTypeMask  = 0x3fff
	nlmsgHdrLen  = 16
	dcbmsgLen    = 4
	ieeePFCMinSz = 2 // pfc_cap, pfc_en: all we read of struct ieee_pfc
)

// Reader asks the kernel over rtnetlink. It is safe for concurrent use;
// each call opens its own socket.
type Reader struct {
	// Timeout bounds one request; zero means 2 seconds.
	Timeout time.Duration
	seq     atomic.Uint32
}

var _ rdma.PFCReader = (*Reader)(nil)

// PFCEnabled returns the mask of priorities with PFC enabled on ifname.
// An interface whose driver has no DCB support yields an error wrapping
// rdma.ErrNoDCB.
func (r *Reader) PFCEnabled(ctx context.Context, ifname string) (uint8, error) {
	if ifname == "" || len(ifname) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("bad interface name %q", ifname)
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return 0, fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return 0, fmt.Errorf("netlink socket timeout: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("netlink bind: %w", err)
	}
	seq := r.seq.Add(1)
	if err := unix.Sendto(fd, request(ifname, seq), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("netlink send: %w", err)
	}
	buf := make([]byte, 16384)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return 0, fmt.Errorf("netlink receive: %w", err)
		}
		mask, done, err := parseReply(buf[:n], seq)
		if err != nil {
			return 0, fmt.Errorf("DCB of %s: %w", ifname, err)
		}
		if done {
			return mask, nil
		}
	}
}

// request builds RTM_GETDCB / DCB_CMD_IEEE_GET for ifname.
func request(ifname string, seq uint32) []byte {
	name := append([]byte(ifname), 0)
	attrLen := 4 + len(name)
	total := nlmsgHdrLen + dcbmsgLen + align4(attrLen)
	b := make([]byte, total)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(total))
	ne.PutUint16(b[4:], unix.RTM_GETDCB)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(b[8:], seq)
	b[16] = unix.AF_UNSPEC
	b[17] = cmdIEEEGet
	ne.PutUint16(b[20:], uint16(attrLen))
	ne.PutUint16(b[22:], attrIfname)
	copy(b[24:], name)
	return b
}

func align4(n int) int { return (n + 3) &^ 3 }

// parseReply reads one datagram of netlink messages. done is false when
// the datagram holds nothing for our request (a stray message).
func parseReply(b []byte, seq uint32) (mask uint8, done bool, err error) {
	ne := binary.NativeEndian
	for len(b) > 0 {
		if len(b) < nlmsgHdrLen {
			return 0, false, fmt.Errorf("truncated netlink header (%d bytes)", len(b))
		}
		l := int(ne.Uint32(b[0:]))
		typ, mseq := ne.Uint16(b[4:]), ne.Uint32(b[8:])
		if l < nlmsgHdrLen || l > len(b) {
			return 0, false, fmt.Errorf("netlink message length %d outside 16..%d", l, len(b))
		}
		body := b[nlmsgHdrLen:l]
		b = b[min(align4(l), len(b)):]
		if mseq != seq {
			continue
		}
		switch typ {
		case unix.NLMSG_ERROR:
			if len(body) < 4 {
				return 0, false, errors.New("truncated netlink error")
			}
			errno := -int32(ne.Uint32(body))
			switch syscall.Errno(errno) {
			case 0:
				return 0, false, errors.New("acknowledged without a DCB reply")
			case unix.EOPNOTSUPP:
				return 0, false, fmt.Errorf("%w (%v)", rdma.ErrNoDCB, syscall.Errno(errno))
			}
			return 0, false, syscall.Errno(errno)
		case unix.RTM_GETDCB:
			mask, err := parseDCB(body)
			return mask, err == nil, err
		}
	}
	return 0, false, nil
}

// parseDCB reads the PFC enable mask out of a DCB_CMD_IEEE_GET reply body
// (dcbmsg, then attributes).
func parseDCB(body []byte) (uint8, error) {
	if len(body) < dcbmsgLen {
		return 0, errors.New("truncated dcbmsg")
	}
	if body[1] != cmdIEEEGet {
		return 0, fmt.Errorf("reply to DCB command %d, want %d", body[1], cmdIEEEGet)
	}
	ieee, ok, err := findAttr(body[dcbmsgLen:], attrIEEE)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("%w: reply has no IEEE attributes", rdma.ErrNoDCB)
	}
	pfc, ok, err := findAttr(ieee, attrIEEEPFC)
	if err != nil {
		return 0, fmt.Errorf("IEEE attributes: %w", err)
	}
	if !ok {
		return 0, fmt.Errorf("%w: driver reports no IEEE PFC", rdma.ErrNoDCB)
	}
	if len(pfc) < ieeePFCMinSz {
		return 0, fmt.Errorf("ieee_pfc of %d bytes", len(pfc))
	}
	return pfc[1], nil // pfc_en
}

// findAttr returns the payload of the first netlink attribute of type t.
func findAttr(b []byte, t uint16) ([]byte, bool, error) {
	ne := binary.NativeEndian
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, false, fmt.Errorf("truncated attribute header (%d bytes)", len(b))
		}
		l, typ := int(ne.Uint16(b[0:])), ne.Uint16(b[2:])&nlaTypeMask
		if l < 4 || l > len(b) {
			return nil, false, fmt.Errorf("attribute length %d outside 4..%d", l, len(b))
		}
		if typ == t {
			return b[4:l], true, nil
		}
		b = b[min(align4(l), len(b)):]
	}
	return nil, false, nil
}
