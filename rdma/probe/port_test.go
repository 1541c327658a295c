package probe

import (
	"errors"
	"net"
	"testing"

	"github.com/gpunode/gpunode/rdma"
)

func TestPorts(t *testing.T) {
	roce := rdma.Device{Name: "rxe0", VerbsDevicePresent: true, NUMANode: 1, Ports: []rdma.Port{{
		Number: 1, State: "ACTIVE", Transport: rdma.RoCE, LinkLayer: "Ethernet", RateGbps: 2.5, Rate: "2.5 Gb/sec (1X SDR)", Netdev: "eth0",
		GIDs: []rdma.GID{
			{Index: 0, GID: "fe80:0000:0000:0000:5054:00ff:fe12:3456", Type: "IB/RoCE v1", Netdev: "eth0"},
			{Index: 1, GID: "fe80:0000:0000:0000:5054:00ff:fe12:3456", Type: "RoCE v2", Netdev: "eth0"},
			// A link-local (autoconfigured) IPv4 address is never routed.
			{Index: 2, GID: "0000:0000:0000:0000:0000:ffff:a9fe:0a0b", Type: "RoCE v2", Netdev: "eth0"},
			{Index: 2, GID: "0000:0000:0000:0000:0000:ffff:0a00:020f", Type: "IB/RoCE v1", Netdev: "eth0"},
			{Index: 3, GID: "0000:0000:0000:0000:0000:ffff:0a00:020f", Type: "RoCE v2", Netdev: "eth0"},
			{Index: 5, GID: "0000:0000:0000:0000:0000:ffff:0a01:0001", Type: "RoCE v2", Netdev: "eth0"},
		},
	}}}
	ib := rdma.Device{Name: "mlx5_0", VerbsDevicePresent: true, NUMANode: -1, Ports: []rdma.Port{
		{Number: 1, State: "ACTIVE", Transport: rdma.InfiniBand, LinkLayer: "InfiniBand", RateGbps: 40, Rate: "40 Gb/sec (4X QDR)", LID: new(uint32(7))},
		{Number: 2, State: "DOWN", Transport: rdma.InfiniBand},
	}}
	// An SR-IOV virtual function: probed only when named.
	vf := rdma.Device{Name: "mlx5_4", VerbsDevicePresent: true, VirtualFunction: true, Ports: []rdma.Port{
		{Number: 1, State: "ACTIVE", Transport: rdma.InfiniBand, LinkLayer: "InfiniBand", RateGbps: 400, Rate: "400 Gb/sec (4X NDR)", LID: new(uint32(9))},
	}}
	noVerbs := rdma.Device{Name: "mlx5_1", Ports: []rdma.Port{{Number: 1, State: "ACTIVE", Transport: rdma.InfiniBand}}}
	iwarp := rdma.Device{Name: "iw0", VerbsDevicePresent: true, Ports: []rdma.Port{{Number: 1, State: "ACTIVE", Transport: rdma.IWARP}}}
	noIPv4 := rdma.Device{Name: "rxe9", VerbsDevicePresent: true, Ports: []rdma.Port{{Number: 1, State: "ACTIVE", Transport: rdma.RoCE,
		GIDs: []rdma.GID{{Index: 1, GID: "fe80:0000:0000:0000:5054:00ff:fe12:3456", Type: "RoCE v2"}, {Index: 2, GID: "garbage", Type: "RoCE v2"}}}}}
	devs := []rdma.Device{vf, noVerbs, roce, iwarp, noIPv4, ib}

	ports := Ports(devs)
	if len(ports) != 2 {
		t.Fatalf("Ports = %+v", ports)
	}
	if p := ports[0]; p.Name() != "rxe0/1" || p.GIDIndex != 3 || p.IP != "10.0.2.15" || p.Netdev != "eth0" || p.LineRateBytesPerSecond() != 2.5e9/8 || p.NUMANode != 1 {
		t.Errorf("RoCE port %+v", p)
	}
	// QDR: 40 Gb/s signalling, 32 Gb/s of data.
	if p := ports[1]; p.Name() != "mlx5_0/1" || p.GIDIndex != -1 || p.IP != "" || p.LineRateBytesPerSecond() != 4e9 || p.NUMANode != -1 {
		t.Errorf("IB port %+v", p)
	}
	if p, err := PortFor(devs, nil, "mlx5_4"); err != nil || p.Name() != "mlx5_4/1" {
		t.Errorf("PortFor a VF by name = %+v, %v", p, err)
	}
	if p, err := PortFor(devs, net.ParseIP("169.254.10.11"), ""); err != nil || p.GIDIndex != 3 {
		t.Errorf("PortFor a link-local address = %+v, %v; want the routable GID", p, err)
	}

	if p, err := PortFor(devs, net.ParseIP("10.1.0.1"), ""); err != nil || p.GIDIndex != 5 {
		t.Errorf("PortFor 10.1.0.1 = %+v, %v", p, err)
	}
	if p, err := PortFor(devs, net.ParseIP("192.168.9.9"), ""); err != nil || p.Name() != "rxe0/1" || p.GIDIndex != 3 {
		t.Errorf("PortFor unknown IP = %+v, %v", p, err)
	}
	if p, err := PortFor(devs, nil, "mlx5_0"); err != nil || p.Name() != "mlx5_0/1" {
		t.Errorf("PortFor mlx5_0 = %+v, %v", p, err)
	}
	if _, err := PortFor(devs, nil, "mlx5_1"); !errors.Is(err, ErrNoPort) {
		t.Errorf("PortFor device without verbs: %v", err)
	}
	if _, err := PortFor(nil, nil, ""); !errors.Is(err, ErrNoPort) {
		t.Errorf("PortFor no devices: %v", err)
	}
}

// RoCE v2 over IPv6: a port whose only routable GID is a global IPv6
// address is probed on it; one with both uses its IPv4 GID, as before.
func TestPortsIPv6(t *testing.T) {
	v6 := "fd00:0000:0000:0004:5054:00ff:fe12:3456"
	only6 := roceNIC("rxe1", "ACTIVE", v6)
	both := roceNIC("rxe2", "ACTIVE", v6, v4GID("10.0.4.2"))
	ports := Ports([]rdma.Device{only6, both})
	if len(ports) != 2 || ports[0].IP != "fd00::4:5054:ff:fe12:3456" || ports[0].GIDIndex != 2 || ports[1].IP != "10.0.4.2" || ports[1].GIDIndex != 3 {
		t.Errorf("Ports = %+v", ports)
	}
	if p, err := PortFor([]rdma.Device{only6, both}, net.ParseIP("fd00::4:5054:ff:fe12:3456"), ""); err != nil || p.Name() != "rxe1/1" {
		t.Errorf("PortFor an IPv6 control address = %+v, %v", p, err)
	}
}
