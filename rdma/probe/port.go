// Package probe measures RDMA between two ends with rdma/verbs: RDMA WRITE
// bandwidth and SEND/RECV latency, defined as perftest's ib_write_bw and
// ib_send_lat, plus a TCP baseline. The ends are two queue pairs of this
// node (Loopback) or this node and another node's agent (Client, Server),
// which agree over an authenticated TCP control channel.
package probe

import (
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/gpunode/gpunode/rdma"
)

// Port is one probe end's RDMA port and address.
type Port struct {
	Device    string         `json:"device"`
	Port      int            `json:"port"`
	Transport rdma.Transport `json:"transport"`
	// GIDIndex is the RoCE v2 GID used (RoCE); -1 on InfiniBand,
	// which addresses by LID.
	GIDIndex int    `json:"gid_index"`
	GID      string `json:"gid,omitempty"`
	// IP is the address in the GID (RoCE): IPv4, or IPv6 on a port
	// without a routable IPv4 one.
	IP     string `json:"ip,omitempty"`
	Netdev string `json:"netdev,omitempty"`
	// RateGbps is the rate the kernel reports (the signalling rate up to
	// InfiniBand FDR); DataRateGbps what of it carries data
	// (rdma.Port.DataRateGbps), which line-rate fractions use.
	RateGbps     float64 `json:"rate_gbps"`
	DataRateGbps float64 `json:"data_rate_gbps"`
	// NUMANode is the device's NUMA node (-1 unknown), where a probe puts
	// its buffer and polling thread.
	NUMANode int `json:"numa_node"`
}

// Name is "device/port".
func (p Port) Name() string { return fmt.Sprintf("%s/%d", p.Device, p.Port) }

// LineRateBytesPerSecond is the port's data rate in bytes/s (0 when
// unknown).
func (p Port) LineRateBytesPerSecond() float64 { return p.DataRateGbps * 1e9 / 8 }

// ErrNoPort: no ACTIVE port that a probe can use.
var ErrNoPort = errors.New("no ACTIVE RDMA port with a usable address")

// Ports lists the ports probes can use: ACTIVE, with an openable verbs
// device that is not an SR-IOV virtual function (a VF belongs to the VM
// or pod it is handed to, and shares the PF's link), and on RoCE a RoCE
// v2 GID holding a routable IPv4 address (the lowest index), else one
// holding a global IPv6 address. The order is
// the devices' and ports' order.
func Ports(devs []rdma.Device) []Port {
	var out []Port
	for _, d := range devs {
		if !d.VerbsDevicePresent || d.VirtualFunction {
			continue
		}
		for _, p := range d.Ports {
			if !p.Active() {
				continue
			}
			if c := candidates(d, p); len(c) > 0 {
				out = append(out, c[0])
			}
		}
	}
	return out
}

// candidates are the addresses of one port: on InfiniBand the port
// itself, on RoCE one per routable RoCE v2 GID, IPv4 ones first.
func candidates(d rdma.Device, p rdma.Port) []Port {
	base := Port{Device: d.Name, Port: p.Number, Transport: p.Transport, GIDIndex: -1, Netdev: p.Netdev,
		RateGbps: p.RateGbps, DataRateGbps: p.DataRateGbps(), NUMANode: d.NUMANode}
	switch p.Transport {
	case rdma.InfiniBand:
		return []Port{base}
	case rdma.RoCE:
	default:
		return nil // iWARP needs connection management, not raw RC QPs
	}
	var v4, v6 []Port
	for _, g := range p.GIDs {
		if g.Type != "RoCE v2" {
			continue
		}
		ip := gidIP(g.GID)
		if ip == nil {
			continue
		}
		c := base
		c.GIDIndex, c.GID, c.IP = g.Index, g.GID, ip.String()
		if g.Netdev != "" {
			c.Netdev = g.Netdev
		}
		if ip.To4() != nil {
			v4 = append(v4, c)
		} else {
			v6 = append(v6, c)
		}
	}
	// IPv4 first: where a port has both, the choice stays what it was
	// before IPv6 GIDs counted.
	return append(v4, v6...)
}

// gidIP returns the IP address of a RoCE v2 GID: the IPv4 address of an
// IPv4-mapped GID ("0000:...:ffff:0a00:020f") or a global IPv6 address
// ("fd00:0004:...", RoCE v2 over IPv6). Link-local addresses (169.254/16,
// fe80::/10) are autoconfigured per link (the same on many nodes, never
// routed), so a peer cannot reach this node at one: nil for those, as
// for anything else.
func gidIP(gid string) net.IP {
	ip := net.ParseIP(gid)
	if ip == nil {
		return nil
	}
	if v4 := ip.To4(); v4 != nil {
		if v4.IsLinkLocalUnicast() || v4.IsUnspecified() {
			return nil
		}
		return v4
	}
	if !ip.IsGlobalUnicast() {
		return nil
	}
	return ip
}

// PortFor picks the port whose RoCE v2 GID holds ip, the address the
// control connection uses on this node, so RDMA takes the same path; with
// no such GID (InfiniBand, or ip on another interface) the first usable
// port. device, when set, restricts the choice, and may name an SR-IOV
// virtual function, which is otherwise left out.
func PortFor(devs []rdma.Device, ip net.IP, device string) (Port, error) {
	var first *Port
	for _, d := range devs {
		if !d.VerbsDevicePresent || (device != "" && d.Name != device) || (device == "" && d.VirtualFunction) {
			continue
		}
		for _, p := range d.Ports {
			if !p.Active() {
				continue
			}
			cs := candidates(d, p)
			if i := slices.IndexFunc(cs, func(c Port) bool { return ip != nil && c.IP == ip.String() }); i >= 0 {
				return cs[i], nil
			}
			if first == nil && len(cs) > 0 {
				first = &cs[0]
			}
		}
	}
	if first == nil {
		if device != "" {
			return Port{}, fmt.Errorf("%s: %w", device, ErrNoPort)
		}
		return Port{}, ErrNoPort
	}
	return *first, nil
}
