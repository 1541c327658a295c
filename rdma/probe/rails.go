package probe

import (
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/gpunode/gpunode/rdma"
)

// A rail is one NIC port of a multi-rail node (an 8-HCA DGX/HGX node has
// eight) together with the port on the same fabric plane of every other
// node. A peer probe tests each rail: this node's port k against the
// peer's port on the same rail.
//
// Rail rules (RailRule.Match):
//   - index: rail k is the k-th port of the node's physical RDMA devices
//     (natural device order, mlx5_10 after mlx5_9, then port number),
//     ACTIVE or not, so a port that went down keeps its place. SR-IOV
//     virtual functions and iWARP ports are no rails. Right where every
//     node has the same NICs in the same slots, as DGX/HGX nodes do.
//   - subnet: the peer's port whose address is on the same subnet: on
//     RoCE the address of the port's RoCE v2 GID (IPv4 or IPv6) under a
//     prefix length (default /24 and /64), on InfiniBand the subnet
//     prefix (the upper 64 bits of the port GID, which the subnet manager
//     sets per fabric). Right where rails are cabled to distinct subnets
//     but NICs are numbered differently from node to node.
const (
	RailMatchIndex  = "index"
	RailMatchSubnet = "subnet"
)

// Default prefix lengths of the subnet rule on RoCE.
const (
	DefaultIPv4RailPrefix = 24
	DefaultIPv6RailPrefix = 64
)

// RailRule says how this node's ports pair with a peer's.
type RailRule struct {
	// Match is RailMatchIndex (the default) or RailMatchSubnet.
	Match string
	// IPv4Prefix and IPv6Prefix are the prefix lengths of a RoCE rail's
	// subnet (DefaultIPv4RailPrefix and DefaultIPv6RailPrefix when 0).
	IPv4Prefix, IPv6Prefix int
}

func (r RailRule) match() string {
	if r.Match == "" {
		return RailMatchIndex
	}
	return r.Match
}

// Validate checks the rule's values.
func (r RailRule) Validate() error {
	if m := r.match(); m != RailMatchIndex && m != RailMatchSubnet {
		return fmt.Errorf("rail match %q: want %s or %s", r.Match, RailMatchIndex, RailMatchSubnet)
	}
	if r.IPv4Prefix < 0 || r.IPv4Prefix > 32 {
		return fmt.Errorf("IPv4 rail prefix length %d out of range 0..32", r.IPv4Prefix)
	}
	if r.IPv6Prefix < 0 || r.IPv6Prefix > 128 {
		return fmt.Errorf("IPv6 rail prefix length %d out of range 0..128", r.IPv6Prefix)
	}
	return nil
}

// Rail is one of this node's rails.
type Rail struct {
	Index int
	// Port is the rail's port and, when it has one, its address.
	Port Port
	// State is the port's logical state ("ACTIVE", "DOWN", ...).
	State string
	// Usable: ACTIVE with an address a probe can use.
	Usable bool
	// Subnet is the rail's subnet under the rule's prefix lengths ("" when
	// it has no address): "10.0.4.0/24", "fd00:4::/64", or "ib
	// fe80:0000:0000:0000" (an InfiniBand subnet prefix).
	Subnet string

	// alternatives are the port's other addresses, each with its subnet,
	// for the subnet rule on a port with several.
	alternatives []railAddr
}

type railAddr struct {
	port   Port
	subnet string
}

// Name is "rail K (device/port)".
func (r Rail) Name() string { return fmt.Sprintf("rail %d (%s)", r.Index, r.Port.Name()) }

// Rails lists this node's rails in order (see the rules above).
func Rails(devs []rdma.Device, rule RailRule) []Rail {
	var out []Rail
	for _, d := range devs {
		if !d.VerbsDevicePresent || d.VirtualFunction {
			continue
		}
		for _, p := range d.Ports {
			if p.Transport != rdma.RoCE && p.Transport != rdma.InfiniBand {
				continue
			}
			r := Rail{Index: len(out), State: p.State}
			r.Port = Port{Device: d.Name, Port: p.Number, Transport: p.Transport, GIDIndex: -1, Netdev: p.Netdev,
				RateGbps: p.RateGbps, DataRateGbps: p.DataRateGbps(), NUMANode: d.NUMANode}
			for _, c := range candidates(d, p) {
				r.alternatives = append(r.alternatives, railAddr{port: c, subnet: rule.subnet(c, p)})
			}
			if len(r.alternatives) > 0 {
				r.Port, r.Subnet = r.alternatives[0].port, r.alternatives[0].subnet
			}
			r.Usable = p.Active() && len(r.alternatives) > 0
			out = append(out, r)
		}
	}
	return out
}

// subnet is c's subnet under the rule: the masked address on RoCE, the
// port GID's subnet prefix on InfiniBand ("" when unknown).
func (r RailRule) subnet(c Port, p rdma.Port) string {
	if c.Transport == rdma.InfiniBand {
		for _, g := range p.GIDs {
			if g.Index == 0 {
				if ip := net.ParseIP(g.GID); ip != nil && len(ip) == net.IPv6len && !ip.IsUnspecified() {
					return "ib " + gidPrefix(ip)
				}
			}
		}
		return ""
	}
	ip := net.ParseIP(c.IP)
	if ip == nil {
		return ""
	}
	bits, n := 128, r.IPv6Prefix
	if n == 0 {
		n = DefaultIPv6RailPrefix
	}
	if v4 := ip.To4(); v4 != nil {
		ip, bits, n = v4, 32, r.IPv4Prefix
		if n == 0 {
			n = DefaultIPv4RailPrefix
		}
	}
	mask := net.CIDRMask(n, bits)
	return (&net.IPNet{IP: ip.Mask(mask), Mask: mask}).String()
}

// gidPrefix is the upper 64 bits of a GID in the kernel's format.
func gidPrefix(ip net.IP) string {
	h := hex.EncodeToString(ip[:8])
	return h[0:4] + ":" + h[4:8] + ":" + h[8:12] + ":" + h[12:16]
}

// railRuleFor is the rule the server applies to a client's rail request:
// the client's, with the prefix length its subnet names.
func railRuleFor(req RailRequest) RailRule {
	rule := RailRule{Match: req.Match}
	if _, n, err := net.ParseCIDR(req.Subnet); err == nil {
		ones, bits := n.Mask.Size()
		if bits == 32 {
			rule.IPv4Prefix = ones
		} else {
			rule.IPv6Prefix = ones
		}
	}
	return rule
}

// RailRequest names the rail a client probes: its index and subnet on
// the client, and the client's rule.
type RailRequest struct {
	Index  int    `json:"index"`
	Match  string `json:"match"`
	Subnet string `json:"subnet,omitempty"`
}

func (r RailRequest) validate() error {
	if r.Index < 0 || r.Index > 1023 {
		return fmt.Errorf("rail %d out of range 0..1023", r.Index)
	}
	if err := (RailRule{Match: r.Match}).Validate(); err != nil {
		return err
	}
	if r.Match == RailMatchSubnet && r.Subnet == "" {
		return fmt.Errorf("rail %d: the subnet rule needs the rail's subnet", r.Index)
	}
	return nil
}

// request is what a client sends for rail r.
func (rule RailRule) request(r Rail) *RailRequest {
	return &RailRequest{Index: r.Index, Match: rule.match(), Subnet: r.Subnet}
}

// MatchRail picks this node's rail for a peer's request among rails
// (Rails under the same rule), with its address on the peer's subnet
// under the subnet rule. It fails, saying why, when this node has no such
// rail or its port cannot carry a probe.
func MatchRail(rails []Rail, req RailRequest) (Rail, error) {
	var r Rail
	switch req.Match {
	case RailMatchIndex, "":
		if req.Index >= len(rails) {
			return Rail{}, fmt.Errorf("this node has no rail %d: it has %d (%s)", req.Index, len(rails), railList(rails, false))
		}
		r = rails[req.Index]
	case RailMatchSubnet:
		found := false
		for _, c := range rails {
			for _, a := range c.alternatives {
				if a.subnet == req.Subnet {
					r, found = c, true
					r.Port, r.Subnet = a.port, a.subnet
					break
				}
			}
			if found {
				break
			}
		}
		if !found {
			return Rail{}, fmt.Errorf("this node has no port on the peer's rail %d subnet %s (its rails: %s)", req.Index, req.Subnet, railList(rails, true))
		}
	default:
		return Rail{}, fmt.Errorf("unknown rail match %q", req.Match)
	}
	if !r.Usable {
		why := "is " + r.State
		if r.State == "ACTIVE" {
			why = "has no usable address"
		}
		return Rail{}, fmt.Errorf("this node's %s %s", r.Name(), why)
	}
	return r, nil
}

// railList names rails for an error: "rail 0 mlx5_0/1, ...", with their
// subnets for the subnet rule.
func railList(rails []Rail, subnets bool) string {
	if len(rails) == 0 {
		return "none"
	}
	var b strings.Builder
	for i, r := range rails {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(r.Index) + " " + r.Port.Name())
		if subnets {
			s := r.Subnet
			if s == "" {
				s = "no address"
			}
			b.WriteString(" " + s)
		}
		if r.State != "ACTIVE" {
			b.WriteString(" " + r.State)
		}
	}
	return b.String()
}
