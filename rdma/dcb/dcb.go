// Package dcb reads the priority flow control (PFC) state of a network
// interface from the kernel's Data Center Bridging netlink interface
// (rtnetlink RTM_GETDCB, DCB_CMD_IEEE_GET): what `mlnx_qos -i <if>` and
// `dcb pfc show dev <if>` print. sysfs has no upstream PFC attribute, so
// this is the one source that works for every DCB-capable driver.
//
// The netlink side is github.com/mdlayher/netlink rather than
// vishvananda/netlink's nl package. Its Conn frames the request, checks
// the reply's sequence number and port ID, turns an NLMSG_ERROR into an
// error that unwraps to the errno (bounds-checked: nl's Execute indexes
// the errno unchecked), and takes a deadline per connection, so one
// request honours its context; nl's Execute has one package-wide socket
// timeout and no context, and without it we would have kept our own
// receive loop and error decoding. Its AttributeDecoder bounds-checks
// every attribute and masks the NLA_F_NESTED flag (dcbnl sets none
// today; nl.ParseRouteAttr would leave it in the type). Its nltest
// package is a whole fake kernel for the tests. What it needs,
// mdlayher/socket and golang.org/x/net, were already in the module graph.
//
// What is ours is pure: request builds the message, parseReply and
// parseDCB read the replies the library hands back.
package dcb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/gpunode/gpunode/rdma"
)

// From linux/dcbnl.h.
const (
	cmdIEEEGet   = 21 // DCB_CMD_IEEE_GET
	attrIfname   = 1  // DCB_ATTR_IFNAME
	attrIEEE     = 13 // DCB_ATTR_IEEE
	attrIEEEPFC  = 2  // DCB_ATTR_IEEE_PFC, struct ieee_pfc
	dcbmsgLen    = 4  // struct dcbmsg: family, cmd, pad
	ieeePFCMinSz = 2  // pfc_cap, pfc_en: all we read of struct ieee_pfc
)

// Reader asks the kernel over rtnetlink. It is safe for concurrent use;
// each call opens its own socket.
type Reader struct {
	// Timeout bounds one request; zero means 2 seconds.
	Timeout time.Duration
}

var _ rdma.PFCReader = (*Reader)(nil)

// PFCEnabled returns the mask of priorities with PFC enabled on ifname.
// An interface whose driver has no DCB support yields an error wrapping
// rdma.ErrNoDCB; a missing one, an error wrapping ENODEV.
func (r *Reader) PFCEnabled(ctx context.Context, ifname string) (uint8, error) {
	if ifname == "" || len(ifname) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("bad interface name %q", ifname)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("DCB of %s: %w", ifname, err)
	}
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return 0, fmt.Errorf("netlink socket: %w", err)
	}
	defer c.Close()
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	deadline := time.Now().Add(timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	if err := c.SetDeadline(deadline); err != nil {
		return 0, fmt.Errorf("netlink socket deadline: %w", err)
	}
	// A context cancelled meanwhile ends a blocked send or receive at once.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	mask, err := query(c, ifname)
	if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil {
		return 0, fmt.Errorf("%w (%w)", err, ctx.Err())
	}
	return mask, err
}

// query sends the request on c and reads the answer: PFCEnabled less the
// socket, so that tests can run it over nltest's fake kernel.
func query(c *netlink.Conn, ifname string) (uint8, error) {
	req, err := request(ifname)
	if err != nil {
		return 0, err
	}
	msgs, err := c.Execute(req)
	switch {
	// dcbnl answers EOPNOTSUPP for a netdev without dcbnl_ops.
	case errors.Is(err, unix.EOPNOTSUPP):
		return 0, fmt.Errorf("DCB of %s: %w (%w)", ifname, rdma.ErrNoDCB, err)
	case err != nil:
		return 0, fmt.Errorf("DCB of %s: %w", ifname, err)
	}
	mask, err := parseReply(msgs)
	if err != nil {
		return 0, fmt.Errorf("DCB of %s: %w", ifname, err)
	}
	return mask, nil
}

// request builds RTM_GETDCB / DCB_CMD_IEEE_GET for ifname; the Conn fills
// in length, sequence number and port ID.
func request(ifname string) (netlink.Message, error) {
	ae := netlink.NewAttributeEncoder()
	ae.String(attrIfname, ifname)
	attrs, err := ae.Encode()
	if err != nil {
		return netlink.Message{}, fmt.Errorf("encode DCB request: %w", err)
	}
	return netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETDCB, Flags: netlink.Request},
		Data:   append([]byte{unix.AF_UNSPEC, cmdIEEEGet, 0, 0}, attrs...),
	}, nil
}

// parseReply reads the PFC enable mask out of the replies to one request.
// Any non-zero errno the library has already returned as an error, so an
// NLMSG_ERROR here is a bare acknowledgement.
func parseReply(msgs []netlink.Message) (uint8, error) {
	for _, m := range msgs {
		switch m.Header.Type {
		case netlink.Error:
			return 0, errors.New("acknowledged without a DCB reply")
		case unix.RTM_GETDCB:
			return parseDCB(m.Data)
		}
	}
	return 0, fmt.Errorf("no DCB reply among %d messages", len(msgs))
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
	ad, err := netlink.NewAttributeDecoder(body[dcbmsgLen:])
	if err != nil {
		return 0, fmt.Errorf("DCB attributes: %w", err)
	}
	var pfc []byte
	var sawIEEE, sawPFC bool
	for ad.Next() {
		if ad.Type() != attrIEEE || sawIEEE {
			continue
		}
		sawIEEE = true
		ad.Do(func(nest []byte) error {
			pfc, sawPFC, err = findPFC(nest)
			return err
		})
	}
	switch {
	case ad.Err() != nil:
		return 0, fmt.Errorf("DCB attributes: %w", ad.Err())
	case !sawIEEE:
		return 0, fmt.Errorf("%w: reply has no IEEE attributes", rdma.ErrNoDCB)
	case !sawPFC:
		return 0, fmt.Errorf("%w: driver reports no IEEE PFC", rdma.ErrNoDCB)
	case len(pfc) < ieeePFCMinSz:
		return 0, fmt.Errorf("ieee_pfc of %d bytes", len(pfc))
	}
	return pfc[1], nil // pfc_en
}

// findPFC returns the first DCB_ATTR_IEEE_PFC in the DCB_ATTR_IEEE nest.
func findPFC(nest []byte) (pfc []byte, ok bool, err error) {
	ad, err := netlink.NewAttributeDecoder(nest)
	if err != nil {
		return nil, false, fmt.Errorf("IEEE attributes: %w", err)
	}
	for ad.Next() {
		if ad.Type() == attrIEEEPFC && !ok {
			pfc, ok = ad.Bytes(), true
		}
	}
	if err := ad.Err(); err != nil {
		return nil, false, fmt.Errorf("IEEE attributes: %w", err)
	}
	return pfc, ok, nil
}
