// Package dcb reads and sets the priority flow control (PFC) state of a
// network interface through the kernel's Data Center Bridging netlink
// interface (rtnetlink RTM_GETDCB, DCB_CMD_IEEE_GET; RTM_SETDCB,
// DCB_CMD_IEEE_SET): what `mlnx_qos -i <if>` and `dcb pfc show dev <if>`
// print and `dcb pfc set` changes. sysfs has no upstream PFC attribute,
// so this is the one source that works for every DCB-capable driver.
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
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/gpunode/gpunode/rdma"
)

// From linux/dcbnl.h.
const (
	cmdIEEEGet = 21 // DCB_CMD_IEEE_GET
	cmdIEEESet = 22 // DCB_CMD_IEEE_SET
	cmdIEEEDel = 23 // DCB_CMD_IEEE_DEL
	// DCB_ATTR_IEEE_APP_TABLE in the DCB_ATTR_IEEE nest, holding
	// DCB_ATTR_IEEE_APP entries: struct dcb_app {u8 selector; u8
	// priority; u16 protocol}.
	attrIEEEAppTable = 3
	attrIEEEApp      = 1
	dcbAppLen        = 4
	// selDSCP is IEEE_8021QAZ_APP_SEL_DSCP: protocol is a DSCP value.
	selDSCP      = 5
	attrIfname   = 1  // DCB_ATTR_IFNAME
	attrIEEE     = 13 // DCB_ATTR_IEEE
	attrIEEEPFC  = 2  // DCB_ATTR_IEEE_PFC, struct ieee_pfc
	dcbmsgLen    = 4  // struct dcbmsg: family, cmd, pad
	ieeePFCMinSz = 2  // pfc_cap, pfc_en: all we read of struct ieee_pfc
	// ieeePFCSize is sizeof(struct ieee_pfc): cap, en, mbc, a pad byte,
	// delay (u16), then requests[8] and indications[8] (u64, 8-aligned).
	// dcbnl_ieee_policy takes DCB_ATTR_IEEE_PFC with at least this length.
	ieeePFCSize = 136
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
	var mask uint8
	err := r.exchange(ctx, ifname, func(c *netlink.Conn) (err error) {
		mask, err = query(c, ifname)
		return err
	})
	return mask, err
}

// SetPFC enables PFC on the priorities of mask and disables it on the
// others. Like `dcb pfc set`, it reads the interface's struct ieee_pfc
// first and writes it back with only pfc_en changed, so the driver keeps
// its MACsec bypass and delay settings. Errors are those of PFCEnabled,
// and the driver's refusal (the errno dcbnl reports in its reply).
func (r *Reader) SetPFC(ctx context.Context, ifname string, mask uint8) error {
	return r.exchange(ctx, ifname, func(c *netlink.Conn) error { return set(c, ifname, mask) })
}

// exchange runs fn on a new rtnetlink socket under the Reader's timeout
// and ctx.
func (r *Reader) exchange(ctx context.Context, ifname string, fn func(c *netlink.Conn) error) error {
	if ifname == "" || len(ifname) >= unix.IFNAMSIZ {
		return fmt.Errorf("bad interface name %q", ifname)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("DCB of %s: %w", ifname, err)
	}
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
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
		return fmt.Errorf("netlink socket deadline: %w", err)
	}
	// A context cancelled meanwhile ends a blocked send or receive at once.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	err = fn(c)
	if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", err, ctx.Err())
	}
	return err
}

// query sends the request on c and reads the answer: PFCEnabled less the
// socket, so that tests can run it over nltest's fake kernel.
func query(c *netlink.Conn, ifname string) (uint8, error) {
	pfc, err := getPFC(c, ifname)
	if err != nil {
		return 0, err
	}
	return pfc[1], nil // pfc_en
}

// getPFC returns the interface's struct ieee_pfc as the kernel sent it
// (at least ieeePFCMinSz bytes).
func getPFC(c *netlink.Conn, ifname string) ([]byte, error) {
	req, err := request(ifname)
	if err != nil {
		return nil, err
	}
	msgs, err := c.Execute(req)
	if err != nil {
		return nil, execError(ifname, err)
	}
	pfc, err := parseReply(msgs)
	if err != nil {
		return nil, fmt.Errorf("DCB of %s: %w", ifname, err)
	}
	return pfc, nil
}

func execError(ifname string, err error) error {
	// dcbnl answers EOPNOTSUPP for a netdev without dcbnl_ops.
	if errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("DCB of %s: %w (%w)", ifname, rdma.ErrNoDCB, err)
	}
	return fmt.Errorf("DCB of %s: %w", ifname, err)
}

// set writes mask into the interface's ieee_pfc (read first, see SetPFC).
func set(c *netlink.Conn, ifname string, mask uint8) error {
	cur, err := getPFC(c, ifname)
	if err != nil {
		return err
	}
	pfc := make([]byte, ieeePFCSize)
	copy(pfc, cur)
	pfc[1] = mask
	req, err := setRequest(ifname, pfc)
	if err != nil {
		return err
	}
	msgs, err := c.Execute(req)
	if err != nil {
		return execError(ifname, err)
	}
	if err := parseSetReply(msgs); err != nil {
		return fmt.Errorf("set PFC of %s: %w", ifname, err)
	}
	return nil
}

// request builds RTM_GETDCB / DCB_CMD_IEEE_GET for ifname; the Conn fills
// in length, sequence number and port ID.
func request(ifname string) (netlink.Message, error) {
	return dcbMessage(unix.RTM_GETDCB, cmdIEEEGet, ifname, nil)
}

// dcbMessage builds an rtnetlink DCB message: struct dcbmsg (family,
// command, padding) and the attributes, the interface name first;
// ieee, when not nil, fills a nested DCB_ATTR_IEEE.
func dcbMessage(typ netlink.HeaderType, cmd uint8, ifname string, ieee func(*netlink.AttributeEncoder) error) (netlink.Message, error) {
	ae := netlink.NewAttributeEncoder()
	ae.String(attrIfname, ifname)
	if ieee != nil {
		ae.Nested(attrIEEE, ieee)
	}
	attrs, err := ae.Encode()
	if err != nil {
		return netlink.Message{}, fmt.Errorf("encode DCB request: %w", err)
	}
	return netlink.Message{
		Header: netlink.Header{Type: typ, Flags: netlink.Request},
		Data:   append([]byte{unix.AF_UNSPEC, cmd, 0, 0}, attrs...),
	}, nil
}

// setRequest builds RTM_SETDCB / DCB_CMD_IEEE_SET carrying one
// DCB_ATTR_IEEE_PFC.
func setRequest(ifname string, pfc []byte) (netlink.Message, error) {
	return dcbMessage(unix.RTM_SETDCB, cmdIEEESet, ifname, func(nae *netlink.AttributeEncoder) error {
		nae.Bytes(attrIEEEPFC, pfc)
		return nil
	})
}

// parseReply reads the struct ieee_pfc out of the replies to one
// request. Any non-zero errno the library has already returned as an
// error, so an NLMSG_ERROR here is a bare acknowledgement.
func parseReply(msgs []netlink.Message) ([]byte, error) {
	for _, m := range msgs {
		switch m.Header.Type {
		case netlink.Error:
			return nil, errors.New("acknowledged without a DCB reply")
		case unix.RTM_GETDCB:
			return parseDCB(m.Data)
		}
	}
	return nil, fmt.Errorf("no DCB reply among %d messages", len(msgs))
}

// parseSetReply reads the answer to DCB_CMD_IEEE_SET: dcbnl_ieee_set
// replies with RTM_SETDCB holding DCB_ATTR_IEEE as one byte, the driver's
// return value truncated to u8 (0 on success, a negative errno's low byte
// otherwise: net/dcb/dcbnl.c, "err = nla_put_u8(skb, DCB_ATTR_IEEE, err)").
func parseSetReply(msgs []netlink.Message) error {
	for _, m := range msgs {
		switch m.Header.Type {
		case netlink.Error:
			return errors.New("acknowledged without a DCB reply")
		case unix.RTM_SETDCB:
			return parseSetStatus(m.Data)
		}
	}
	return fmt.Errorf("no DCB reply among %d messages", len(msgs))
}

func parseSetStatus(body []byte) error {
	if len(body) < dcbmsgLen {
		return errors.New("truncated dcbmsg")
	}
	if body[1] != cmdIEEESet {
		return fmt.Errorf("reply to DCB command %d, want %d", body[1], cmdIEEESet)
	}
	ad, err := netlink.NewAttributeDecoder(body[dcbmsgLen:])
	if err != nil {
		return fmt.Errorf("DCB attributes: %w", err)
	}
	var status []byte
	for ad.Next() {
		if ad.Type() == attrIEEE && status == nil {
			status = append([]byte{}, ad.Bytes()...)
		}
	}
	switch {
	case ad.Err() != nil:
		return fmt.Errorf("DCB attributes: %w", ad.Err())
	case len(status) != 1:
		return fmt.Errorf("reply has no one-byte status (%d bytes)", len(status))
	case status[0] != 0:
		// -errno's low byte: EINVAL (22) arrives as 234.
		return fmt.Errorf("the driver refused it: %w", syscall.Errno(256-int(status[0])))
	}
	return nil
}

// getReplyAttrs checks that body (dcbmsg, then attributes) answers
// DCB_CMD_IEEE_GET and returns a decoder of its attributes.
func getReplyAttrs(body []byte) (*netlink.AttributeDecoder, error) {
	if len(body) < dcbmsgLen {
		return nil, errors.New("truncated dcbmsg")
	}
	if body[1] != cmdIEEEGet {
		return nil, fmt.Errorf("reply to DCB command %d, want %d", body[1], cmdIEEEGet)
	}
	ad, err := netlink.NewAttributeDecoder(body[dcbmsgLen:])
	if err != nil {
		return nil, fmt.Errorf("DCB attributes: %w", err)
	}
	return ad, nil
}

// parseDCB reads the struct ieee_pfc out of a DCB_CMD_IEEE_GET reply
// body (dcbmsg, then attributes).
func parseDCB(body []byte) ([]byte, error) {
	ad, err := getReplyAttrs(body)
	if err != nil {
		return nil, err
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
		return nil, fmt.Errorf("DCB attributes: %w", ad.Err())
	case !sawIEEE:
		return nil, fmt.Errorf("%w: reply has no IEEE attributes", rdma.ErrNoDCB)
	case !sawPFC:
		return nil, fmt.Errorf("%w: driver reports no IEEE PFC", rdma.ErrNoDCB)
	case len(pfc) < ieeePFCMinSz:
		return nil, fmt.Errorf("ieee_pfc of %d bytes", len(pfc))
	}
	return pfc, nil
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

// DSCP trust. mlx5 trusts DSCP while the interface's DCB application
// table holds DSCP entries: its ieee_setapp switches the port to DSCP
// trust when the first one is added and its ieee_delapp back to PCP when
// the last one goes (drivers/net/ethernet/mellanox/mlx5/core/en/
// en_dcbnl.c, dscp_app_cnt), and at start it fills the table when the
// firmware trusts DSCP. The table is what `dcb app show dev <if>` prints.

// DSCPMap returns the DSCP entries of ifname's DCB application table:
// DSCP value -> priority. Errors are those of PFCEnabled.
func (r *Reader) DSCPMap(ctx context.Context, ifname string) (map[uint8]uint8, error) {
	var m map[uint8]uint8
	err := r.exchange(ctx, ifname, func(c *netlink.Conn) (err error) {
		m, err = getDSCP(c, ifname)
		return err
	})
	return m, err
}

// SetDSCPMap makes the DSCP entries of ifname's application table
// exactly m: entries not in m (or mapping to another priority) are
// deleted first (DCB_CMD_IEEE_DEL), then the missing ones added
// (DCB_CMD_IEEE_SET). An empty m leaves no DSCP entry: mlx5 then trusts
// PCP.
func (r *Reader) SetDSCPMap(ctx context.Context, ifname string, m map[uint8]uint8) error {
	return r.exchange(ctx, ifname, func(c *netlink.Conn) error { return setDSCP(c, ifname, m) })
}

func getDSCP(c *netlink.Conn, ifname string) (map[uint8]uint8, error) {
	req, err := request(ifname)
	if err != nil {
		return nil, err
	}
	msgs, err := c.Execute(req)
	if err != nil {
		return nil, execError(ifname, err)
	}
	for _, m := range msgs {
		if m.Header.Type == unix.RTM_GETDCB {
			apps, err := parseApps(m.Data)
			if err != nil {
				return nil, fmt.Errorf("DCB of %s: %w", ifname, err)
			}
			return apps, nil
		}
	}
	return nil, fmt.Errorf("DCB of %s: no DCB reply among %d messages", ifname, len(msgs))
}

func setDSCP(c *netlink.Conn, ifname string, want map[uint8]uint8) error {
	cur, err := getDSCP(c, ifname)
	if err != nil {
		return err
	}
	var del, add [][dcbAppLen]byte
	for _, d := range sortedKeys(cur) {
		if p, ok := want[d]; !ok || p != cur[d] {
			del = append(del, dcbApp(d, cur[d]))
		}
	}
	for _, d := range sortedKeys(want) {
		if p, ok := cur[d]; !ok || p != want[d] {
			add = append(add, dcbApp(d, want[d]))
		}
	}
	for _, op := range []struct {
		cmd  uint8
		apps [][dcbAppLen]byte
	}{{cmdIEEEDel, del}, {cmdIEEESet, add}} {
		if len(op.apps) == 0 {
			continue
		}
		req, err := appRequest(op.cmd, ifname, op.apps)
		if err != nil {
			return err
		}
		msgs, err := c.Execute(req)
		if err != nil {
			return execError(ifname, err)
		}
		if err := parseStatusReply(msgs, op.cmd); err != nil {
			return fmt.Errorf("set DSCP map of %s: %w", ifname, err)
		}
	}
	return nil
}

func sortedKeys(m map[uint8]uint8) []uint8 {
	var keys []uint8
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// dcbApp lays out struct dcb_app for a DSCP entry (protocol in host
// byte order, as the kernel's struct has it).
func dcbApp(dscp, prio uint8) [dcbAppLen]byte {
	var b [dcbAppLen]byte
	b[0], b[1] = selDSCP, prio
	binary.NativeEndian.PutUint16(b[2:], uint16(dscp))
	return b
}

// appRequest builds RTM_SETDCB / cmd (DCB_CMD_IEEE_SET or _DEL) with an
// application table.
func appRequest(cmd uint8, ifname string, apps [][dcbAppLen]byte) (netlink.Message, error) {
	return dcbMessage(unix.RTM_SETDCB, cmd, ifname, func(nae *netlink.AttributeEncoder) error {
		nae.Nested(attrIEEEAppTable, func(tae *netlink.AttributeEncoder) error {
			for _, a := range apps {
				tae.Bytes(attrIEEEApp, a[:])
			}
			return nil
		})
		return nil
	})
}

// parseApps reads the DSCP entries of the application table out of a
// DCB_CMD_IEEE_GET reply body. A reply without a table has none.
func parseApps(body []byte) (map[uint8]uint8, error) {
	ad, err := getReplyAttrs(body)
	if err != nil {
		return nil, err
	}
	apps := map[uint8]uint8{}
	sawIEEE := false
	for ad.Next() {
		if ad.Type() != attrIEEE || sawIEEE {
			continue
		}
		sawIEEE = true
		ad.Nested(func(nad *netlink.AttributeDecoder) error {
			for nad.Next() {
				if nad.Type() != attrIEEEAppTable {
					continue
				}
				nad.Nested(func(tad *netlink.AttributeDecoder) error {
					for tad.Next() {
						b := tad.Bytes()
						if tad.Type() != attrIEEEApp || len(b) < dcbAppLen || b[0] != selDSCP {
							continue
						}
						if d := binary.NativeEndian.Uint16(b[2:]); d < 64 && b[1] < 8 {
							apps[uint8(d)] = b[1]
						}
					}
					return nil
				})
			}
			return nil
		})
	}
	if err := ad.Err(); err != nil {
		return nil, fmt.Errorf("DCB attributes: %w", err)
	}
	if !sawIEEE {
		return nil, fmt.Errorf("%w: reply has no IEEE attributes", rdma.ErrNoDCB)
	}
	return apps, nil
}

// parseStatusReply is parseSetReply for a command (DCB_CMD_IEEE_SET or
// DCB_CMD_IEEE_DEL, whose reply dcbnl_ieee_del builds the same way).
func parseStatusReply(msgs []netlink.Message, cmd uint8) error {
	for _, m := range msgs {
		switch m.Header.Type {
		case netlink.Error:
			return errors.New("acknowledged without a DCB reply")
		case unix.RTM_SETDCB:
			if len(m.Data) >= dcbmsgLen && m.Data[1] != cmd {
				return fmt.Errorf("reply to DCB command %d, want %d", m.Data[1], cmd)
			}
			b := slices.Clone(m.Data)
			if len(b) >= dcbmsgLen {
				b[1] = cmdIEEESet // parseSetStatus checks the command
			}
			return parseSetStatus(b)
		}
	}
	return fmt.Errorf("no DCB reply among %d messages", len(msgs))
}
