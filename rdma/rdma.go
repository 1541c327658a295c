// Package rdma discovers RDMA devices (InfiniBand HCAs, RoCE NICs, soft-RoCE)
// from sysfs: /sys/class/infiniband, /sys/class/infiniband_verbs,
// /sys/class/net and /dev/infiniband.
package rdma

import "strings"

// Transport of a port, from its link layer.
type Transport string

const (
	InfiniBand Transport = "infiniband"
	RoCE       Transport = "roce"
	// IWARP is RDMA over TCP (node type RNIC); its link layer is Ethernet
	// too, but it is not RoCE.
	IWARP Transport = "iwarp"
)

// Device is one RDMA device (/sys/class/infiniband/<name>).
type Device struct {
	Name string `json:"name"`
	// Driver is the kernel driver of the parent device ("mlx5_core"), or of
	// the RDMA device itself for virtual ones ("rdma_rxe").
	Driver   string `json:"driver,omitempty"`
	NodeType string `json:"node_type,omitempty"` // "CA", "RNIC", "switch"; empty when unknown
	NodeGUID string `json:"node_guid,omitempty"`
	// SysImageGUID is shared by the ports/functions of one physical adapter.
	SysImageGUID    string `json:"sys_image_guid,omitempty"`
	FirmwareVersion string `json:"firmware_version,omitempty"`
	HCAType         string `json:"hca_type,omitempty"`
	BoardID         string `json:"board_id,omitempty"`
	// PCIAddress is empty for virtual devices (soft-RoCE has no PCI parent).
	PCIAddress string `json:"pci_address,omitempty"`
	// VirtualFunction: the parent is an SR-IOV virtual function (it has a
	// physfn link), normally handed to a VM or a pod; probes leave it to
	// its user.
	VirtualFunction bool `json:"virtual_function,omitempty"`
	// NUMANode is -1 when unknown. Devices without a PCI parent take it
	// from their netdev's parent device.
	NUMANode int `json:"numa_node"`
	// Verbs is the uverbs character device name ("uverbs0"), empty if none.
	Verbs string `json:"verbs,omitempty"`
	// VerbsDevicePresent reports whether /dev/infiniband/<Verbs> exists, so
	// user space (and our probes) can open the device.
	VerbsDevicePresent bool   `json:"verbs_device_present"`
	Ports              []Port `json:"ports"`
	// Errors lists what could not be read for this device; the rest of the
	// device is still reported.
	Errors []string `json:"errors,omitempty"`
}

// Port is one port of an RDMA device.
type Port struct {
	Number int `json:"number"`
	// State is the logical state without its number: "ACTIVE", "DOWN", "INIT", "ARMED".
	State string `json:"state"`
	// PhysState is the physical state: "LinkUp", "Polling", "Disabled".
	PhysState string `json:"phys_state"`
	// LinkLayer as sysfs reports it: "InfiniBand" or "Ethernet".
	LinkLayer string    `json:"link_layer"`
	Transport Transport `json:"transport"`
	// RateGbps is the signalling rate in Gb/s (400 for "400 Gb/sec (4X NDR)").
	RateGbps float64 `json:"rate_gbps"`
	// Rate is the kernel's text ("400 Gb/sec (4X NDR)").
	Rate string `json:"rate"`
	// LID and SMLID are InfiniBand addresses: 0 on RoCE and on IB ports
	// without a subnet manager, nil when unknown (the driver has no lid or
	// sm_lid file).
	LID   *uint32 `json:"lid,omitempty"`
	SMLID *uint32 `json:"sm_lid,omitempty"`
	// ActiveMTU in bytes, 0 when sysfs cannot tell. For RoCE it is derived
	// from the netdev MTU; InfiniBand and iWARP ports report 0 until verbs
	// (ibv_query_port) fills it in.
	ActiveMTU int `json:"active_mtu,omitempty"`
	// Netdev is the network interface of the port (RoCE, IPoIB), if any.
	Netdev    string `json:"netdev,omitempty"`
	NetdevMTU int    `json:"netdev_mtu,omitempty"`
	GIDs      []GID  `json:"gids,omitempty"`
	// RoCE is the RoCE configuration of a RoCE port; nil on others.
	RoCE   *RoCEConfig `json:"roce,omitempty"`
	Errors []string    `json:"errors,omitempty"`
}

// RoCE modes as the kernel names them (GID types, rdma_cm's default_roce_mode).
const (
	RoCEv1 = "IB/RoCE v1"
	RoCEv2 = "RoCE v2"
)

// Where RoCEConfig.DefaultMode comes from.
const (
	// ModeConfigfs: /sys/kernel/config/rdma_cm/<dev>/ports/<n>/default_roce_mode.
	ModeConfigfs = "configfs"
	// ModeKernelDefault: no configfs entry (nobody created the device's
	// directory); since Linux 4.9 rdma_cm then prefers RoCE v2 wherever
	// the port supports it, which its RoCE v2 GIDs show.
	ModeKernelDefault = "kernel-default"
)

// RoCEConfig is what decides whether a RoCE port runs lossless and routable:
// the RoCE version rdma_cm connects with, ECN (DCQCN) and PFC per priority.
type RoCEConfig struct {
	// DefaultMode is RoCEv1 or RoCEv2; ModeSource says how it was found.
	DefaultMode string `json:"default_mode,omitempty"`
	ModeSource  string `json:"mode_source,omitempty"`
	// ECN is the congestion notification state of the port's netdev; nil
	// when the driver does not expose it (mlx5 does, under
	// /sys/class/net/<if>/ecn).
	ECN *ECN `json:"ecn,omitempty"`
	// PFC is the priority flow control state of the port's netdev from
	// DCB; nil when it could not be read (no DCB support, no reader).
	PFC *PFC `json:"pfc,omitempty"`
}

// ECN lists the priorities (0-7) with ECN enabled, as notification point
// (the receiver marks congestion back with CNPs) and reaction point (the
// sender slows down on a CNP). DCQCN needs both.
type ECN struct {
	NotificationPoint []int `json:"notification_point"`
	ReactionPoint     []int `json:"reaction_point"`
}

// PFC lists the priorities (0-7) with priority flow control enabled.
type PFC struct {
	Enabled []int `json:"enabled"`
}

// GID is one populated entry of a port's GID table.
type GID struct {
	Index int `json:"index"`
	// GID in the kernel's format ("fe80:0000:0000:0000:...").
	GID string `json:"gid"`
	// Type is "IB/RoCE v1" or "RoCE v2".
	Type   string `json:"type,omitempty"`
	Netdev string `json:"netdev,omitempty"`
}

// Active reports whether the port is usable for traffic.
func (p Port) Active() bool { return p.State == "ACTIVE" }

// DataRateGbps is the rate data moves at: the kernel's rate is the
// signalling rate for InfiniBand SDR, DDR and QDR, which encode 8b/10b
// (80% carries data), and FDR, which signals 14.0625 Gb/s per lane (the
// kernel prints 14) and encodes 64b/66b; FDR10, EDR and later print their
// data rate already (EDR signals 25.78125 Gb/s per lane for 25 of data).
// RoCE and iWARP ports report the Ethernet speed, a data rate, whatever
// InfiniBand speed name the driver maps it to ("10 Gb/sec (1X QDR)" on
// mlx5). 0 when the rate is unknown.
// Source: the kernel's rate_show (drivers/infiniband/core/sysfs.c) and
// ib_get_eth_speed; the InfiniBand Architecture Specification's lane rates.
func (p Port) DataRateGbps() float64 {
	if p.RateGbps <= 0 || p.LinkLayer == "Ethernet" {
		return p.RateGbps
	}
	_, detail, _ := strings.Cut(p.Rate, "(")
	_, speed, _ := strings.Cut(strings.TrimSuffix(detail, ")"), "X ")
	switch speed {
	case "SDR", "DDR", "QDR":
		return p.RateGbps * 8 / 10
	case "FDR":
		return p.RateGbps * (14.0625 / 14) * 64 / 66
	}
	return p.RateGbps
}
