package tuning

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"github.com/safchain/ethtool"
	"golang.org/x/sys/unix"

	"github.com/gpunode/gpunode/internal/hostfs"
)

// KindNIC is a netdev's ring size or adaptive interrupt coalescing; key
// "<netdev>/<attr>" with attr one of nicAttrs.
const KindNIC = "nic"

// NIC attributes, as ethtool -g / -c names them.
const (
	nicRxRing     = "rx-ring"
	nicTxRing     = "tx-ring"
	nicAdaptiveRx = "adaptive-rx"
	nicAdaptiveTx = "adaptive-tx"
)

var nicAttrs = []string{nicRxRing, nicTxRing, nicAdaptiveRx, nicAdaptiveTx}

// NICSettings are ring sizes and interrupt coalescing of netdevs.
type NICSettings struct {
	// Netdevs selects netdevs by name; empty selects the netdevs of the
	// RDMA devices (RoCE ports, soft-RoCE included).
	Netdevs []string `yaml:"netdevs,omitempty" json:"netdevs,omitempty"`
	// RxRing and TxRing are ring sizes (ethtool -G rx/tx); 0 leaves them.
	RxRing int `yaml:"rxRing,omitempty" json:"rx_ring,omitempty"`
	TxRing int `yaml:"txRing,omitempty" json:"tx_ring,omitempty"`
	// AdaptiveRx and AdaptiveTx switch adaptive interrupt coalescing
	// (ethtool -C adaptive-rx/tx); nil leaves it.
	AdaptiveRx *bool `yaml:"adaptiveRx,omitempty" json:"adaptive_rx,omitempty"`
	AdaptiveTx *bool `yaml:"adaptiveTx,omitempty" json:"adaptive_tx,omitempty"`
	// AllowDisruptive lets tuning make changes that can take a link down
	// for a moment: a ring resize reallocates the queues, and mlx5 and
	// others reset the link for it. Without it such changes are planned,
	// marked disruptive, and never made (not by apply, not by the daemon).
	AllowDisruptive bool `yaml:"allowDisruptive,omitempty" json:"allow_disruptive,omitempty"`
}

var netdevName = regexp.MustCompile(`^[A-Za-z0-9_.:@-]{1,15}$`) // IFNAMSIZ 16

func (n NICSettings) any() bool {
	return n.RxRing != 0 || n.TxRing != 0 || n.AdaptiveRx != nil || n.AdaptiveTx != nil
}

func (n NICSettings) validate(bad func(key, format string, args ...any)) {
	for _, d := range n.Netdevs {
		if !netdevName.MatchString(d) {
			bad("nic.netdevs", "%q is not a netdev name", d)
		}
	}
	for key, v := range map[string]int{"nic.rxRing": n.RxRing, "nic.txRing": n.TxRing} {
		if v < 0 || v > 1<<20 {
			bad(key, "%d: want 1 to 1048576 (0 leaves it)", v)
		}
	}
	if !n.any() && (len(n.Netdevs) > 0 || n.AllowDisruptive) {
		bad("nic", "netdevs or allowDisruptive set, but no ring size or coalescing")
	}
}

// wants lists the attributes the section sets, with their values.
func (n NICSettings) wants() [][2]string {
	var out [][2]string
	if n.RxRing != 0 {
		out = append(out, [2]string{nicRxRing, strconv.Itoa(n.RxRing)})
	}
	if n.TxRing != 0 {
		out = append(out, [2]string{nicTxRing, strconv.Itoa(n.TxRing)})
	}
	onOff := map[bool]string{true: "on", false: "off"}
	if n.AdaptiveRx != nil {
		out = append(out, [2]string{nicAdaptiveRx, onOff[*n.AdaptiveRx]})
	}
	if n.AdaptiveTx != nil {
		out = append(out, [2]string{nicAdaptiveTx, onOff[*n.AdaptiveTx]})
	}
	return out
}

func nicKey(netdev, attr string) string { return netdev + "/" + attr }

func parseNICKey(key string) (netdev, attr string, err error) {
	netdev, attr, ok := strings.Cut(key, "/")
	if !ok || !netdevName.MatchString(netdev) || !slices.Contains(nicAttrs, attr) {
		return "", "", fmt.Errorf("nic %q: want <netdev>/<%s>", key, strings.Join(nicAttrs, "|"))
	}
	return netdev, attr, nil
}

// disruptive reports whether changing the attribute can take the link
// down: a ring resize reallocates every queue.
func disruptive(attr string) bool { return attr == nicRxRing || attr == nicTxRing }

// NICIO reads and writes netdev settings; the seam to the kernel's
// ethtool interface (SIOCETHTOOL in the agent's network namespace).
type NICIO interface {
	// Get returns the attribute's value and, for rings, the driver's
	// maximum ("" otherwise).
	Get(netdev, attr string) (value, max string, err error)
	Set(netdev, attr, value string) error
	Close()
}

// DialEthtool opens the ethtool ioctl interface (github.com/safchain/ethtool:
// rings and coalescing over SIOCETHTOOL, which every kernel has; the
// netlink interface of mdlayher/ethtool has neither).
func DialEthtool() (NICIO, error) {
	e, err := ethtool.NewEthtool()
	if err != nil {
		return nil, fmt.Errorf("ethtool: %w", err)
	}
	return ethtoolIO{e}, nil
}

type ethtoolIO struct{ e *ethtool.Ethtool }

func (x ethtoolIO) Close() { x.e.Close() }

func (x ethtoolIO) Get(netdev, attr string) (string, string, error) {
	switch attr {
	case nicRxRing, nicTxRing:
		r, err := x.e.GetRing(netdev)
		if err != nil {
			return "", "", err
		}
		if attr == nicRxRing {
			return strconv.Itoa(int(r.RxPending)), strconv.Itoa(int(r.RxMaxPending)), nil
		}
		return strconv.Itoa(int(r.TxPending)), strconv.Itoa(int(r.TxMaxPending)), nil
	default:
		if rx, tx, ok := adaptiveSupported(netdev); ok && !map[string]bool{nicAdaptiveRx: rx, nicAdaptiveTx: tx}[attr] {
			return "", "", unix.EOPNOTSUPP
		}
		c, err := x.e.GetCoalesce(netdev)
		if err != nil {
			return "", "", err
		}
		v := c.UseAdaptiveRxCoalesce
		if attr == nicAdaptiveTx {
			v = c.UseAdaptiveTxCoalesce
		}
		return map[bool]string{true: "on", false: "off"}[v != 0], "", nil
	}
}

// Set changes one field: the rest of the ring or coalescing parameters
// are read first and written back as they are.
func (x ethtoolIO) Set(netdev, attr, value string) error {
	switch attr {
	case nicRxRing, nicTxRing:
		n, err := strconv.ParseUint(value, 10, 32)
		if err != nil {
			return fmt.Errorf("ring size %q: %w", value, err)
		}
		r, err := x.e.GetRing(netdev)
		if err != nil {
			return err
		}
		if attr == nicRxRing {
			r.RxPending = uint32(n)
		} else {
			r.TxPending = uint32(n)
		}
		_, err = x.e.SetRing(netdev, r)
		return err
	default:
		c, err := x.e.GetCoalesce(netdev)
		if err != nil {
			return err
		}
		on := uint32(0)
		if value == "on" {
			on = 1
		}
		if attr == nicAdaptiveRx {
			c.UseAdaptiveRxCoalesce = on
		} else {
			c.UseAdaptiveTxCoalesce = on
		}
		_, err = x.e.SetCoalesce(netdev, c)
		return err
	}
}

// nicNetdevs are the netdevs the section selects: those named, or the
// netdevs of the RDMA devices (ports/N/gid_attrs/ndevs/0 names a RoCE
// port's netdev), sorted.
func nicNetdevs(fsys hostfs.FS, n NICSettings) []string {
	if len(n.Netdevs) > 0 {
		return slices.Sorted(slices.Values(n.Netdevs))
	}
	var out []string
	devs, _ := fsys.Names("/sys/class/infiniband")
	for _, d := range devs {
		ports, _ := fsys.Names("/sys/class/infiniband/" + d + "/ports")
		for _, p := range ports {
			if s, err := fsys.ReadString("/sys/class/infiniband/" + d + "/ports/" + p + "/gid_attrs/ndevs/0"); err == nil && netdevName.MatchString(strings.TrimSpace(s)) {
				out = append(out, strings.TrimSpace(s))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// readNIC reads the section's settings (and journaled ones) into h.
func (t *Tuner) readNIC(ids []ID, h *Host) {
	if len(ids) == 0 {
		return
	}
	dial := t.NIC
	if dial == nil {
		dial = DialEthtool
	}
	io, err := dial()
	if err != nil {
		for _, id := range ids {
			h.Current[id] = Current{Err: err.Error()}
		}
		return
	}
	defer io.Close()
	for _, id := range ids {
		h.Current[id] = readNICValue(io, id, h)
	}
}

func readNICValue(io NICIO, id ID, h *Host) Current {
	netdev, attr, err := parseNICKey(id.Key)
	if err != nil {
		return Current{Err: err.Error()}
	}
	v, max, err := io.Get(netdev, attr)
	switch {
	case errors.Is(err, unix.ENODEV):
		return Current{Unsupported: true}
	case errors.Is(err, unix.EOPNOTSUPP):
		return Current{Unsupported: true}
	case err != nil:
		return Current{Err: fmt.Sprintf("ethtool %s %s: %v", netdev, attr, err)}
	}
	if max != "" {
		if h.NICMax == nil {
			h.NICMax = map[ID]string{}
		}
		h.NICMax[id] = max
	}
	return Current{Value: v}
}

// planNIC plans the nic section.
func planNIC(p Profile, h Host, j *Journal) []Step {
	var steps []Step
	for _, netdev := range h.NICNetdevs {
		for _, w := range p.NIC.wants() {
			id := ID{KindNIC, nicKey(netdev, w[0])}
			s := valueStep(id, w[1], h, j)
			switch {
			case s.Action == ActionUnsupported:
				s.Note = fmt.Sprintf("%s: no such netdev, or its driver has no %s (EOPNOTSUPP)", netdev, w[0])
			case s.Action == ActionSet && h.NICMax[id] != "" && atoiOr(w[1]) > atoiOr(h.NICMax[id]):
				s.Action, s.Drift, s.Note = ActionUnsupported, false, fmt.Sprintf("the driver's largest %s is %s", w[0], h.NICMax[id])
			case s.Action == ActionSet && disruptive(w[0]):
				s.Disruptive = true
				if !p.NIC.AllowDisruptive {
					s.Action, s.Drift = ActionSkip, false
					s.Note = joinNotes(s.Note, "disruptive (a ring resize reallocates the queues; mlx5 and others reset the link): set nic.allowDisruptive: true to let tuning make it")
				} else {
					s.Note = joinNotes(s.Note, "disruptive: the link may go down for a moment")
				}
			}
			steps = append(steps, s)
		}
	}
	return steps
}

func atoiOr(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// doNIC writes one netdev setting and reads it back.
func (t *Tuner) doNIC(c Change, done Outcome) Change {
	dial := t.NIC
	if dial == nil {
		dial = DialEthtool
	}
	io, err := dial()
	if err != nil {
		c.Outcome, c.Error = OutcomeFailed, err.Error()
		return c
	}
	defer io.Close()
	netdev, attr, err := parseNICKey(c.Key)
	if err == nil {
		err = io.Set(netdev, attr, c.Want)
	}
	switch {
	case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENODEV):
		c.Outcome, c.Error = OutcomeUnsupported, fmt.Sprintf("ethtool %s %s: %v", netdev, attr, err)
		return c
	case err != nil:
		c.Outcome, c.Error = OutcomeFailed, fmt.Sprintf("ethtool %s %s %s: %v", netdev, attr, c.Want, err)
		return c
	}
	v, _, err := io.Get(netdev, attr)
	switch {
	case err != nil:
		c.Outcome, c.Error = OutcomeFailed, "read back: "+err.Error()
	case v != c.Want:
		c.Outcome, c.Error = OutcomeFailed, fmt.Sprintf("the driver holds %s after writing %s", v, c.Want)
	default:
		c.Outcome = done
	}
	return c
}

// adaptiveSupported asks the kernel's ethtool netlink interface (Linux
// 5.6+) whether the driver supports adaptive coalescing in each
// direction: its COALESCE_GET reply carries only the parameters the
// driver supports (net/ethtool/coalesce.c), while the ioctl answers
// "off" for every driver. ok is false where netlink cannot tell.
func adaptiveSupported(netdev string) (rx, tx, ok bool) {
	c, err := genetlink.Dial(nil)
	if err != nil {
		return false, false, false
	}
	defer c.Close()
	fam, err := c.GetFamily(unix.ETHTOOL_GENL_NAME)
	if err != nil {
		return false, false, false
	}
	ae := netlink.NewAttributeEncoder()
	ae.Nested(unix.ETHTOOL_A_COALESCE_HEADER, func(nae *netlink.AttributeEncoder) error {
		nae.String(unix.ETHTOOL_A_HEADER_DEV_NAME, netdev)
		return nil
	})
	b, err := ae.Encode()
	if err != nil {
		return false, false, false
	}
	msgs, err := c.Execute(genetlink.Message{
		Header: genetlink.Header{Command: unix.ETHTOOL_MSG_COALESCE_GET, Version: unix.ETHTOOL_GENL_VERSION},
		Data:   b,
	}, fam.ID, netlink.Request)
	if err != nil || len(msgs) != 1 {
		return false, false, false
	}
	ad, err := netlink.NewAttributeDecoder(msgs[0].Data)
	if err != nil {
		return false, false, false
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.ETHTOOL_A_COALESCE_USE_ADAPTIVE_RX:
			rx = true
		case unix.ETHTOOL_A_COALESCE_USE_ADAPTIVE_TX:
			tx = true
		}
	}
	return rx, tx, ad.Err() == nil
}
