package probe

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/rdma"
)

// ibHCA is an InfiniBand HCA whose port GID 0 carries subnet prefix.
func ibHCA(name, prefix, state string) rdma.Device {
	return rdma.Device{Name: name, VerbsDevicePresent: true, NUMANode: -1, Ports: []rdma.Port{{
		Number: 1, State: state, Transport: rdma.InfiniBand, LinkLayer: "InfiniBand", RateGbps: 400, Rate: "400 Gb/sec (4X NDR)",
		LID:  new(uint32(7)),
		GIDs: []rdma.GID{{Index: 0, GID: prefix + ":0c42:a103:0012:3456"}},
	}}}
}

// roceNIC is a RoCE NIC with a RoCE v2 GID per address (IPv4-mapped for
// IPv4), after the link-local ones a real port lists first.
func roceNIC(name, state string, gids ...string) rdma.Device {
	p := rdma.Port{Number: 1, State: state, Transport: rdma.RoCE, LinkLayer: "Ethernet", RateGbps: 200, Netdev: "eth" + name[len(name)-1:],
		GIDs: []rdma.GID{
			{Index: 0, GID: "fe80:0000:0000:0000:5054:00ff:fe12:3456", Type: "IB/RoCE v1"},
			{Index: 1, GID: "fe80:0000:0000:0000:5054:00ff:fe12:3456", Type: "RoCE v2"},
		}}
	for i, g := range gids {
		p.GIDs = append(p.GIDs, rdma.GID{Index: 2 + i, GID: g, Type: "RoCE v2"})
	}
	return rdma.Device{Name: name, VerbsDevicePresent: true, NUMANode: 0, Ports: []rdma.Port{p}}
}

func v4GID(ip string) string {
	var a, b, c, d int
	fmt.Sscanf(ip, "%d.%d.%d.%d", &a, &b, &c, &d)
	return fmt.Sprintf("0000:0000:0000:0000:0000:ffff:%02x%02x:%02x%02x", a, b, c, d)
}

func TestRails(t *testing.T) {
	vf := rdma.Device{Name: "mlx5_9", VerbsDevicePresent: true, VirtualFunction: true, Ports: []rdma.Port{{Number: 1, State: "ACTIVE", Transport: rdma.InfiniBand}}}
	iwarp := rdma.Device{Name: "iw0", VerbsDevicePresent: true, Ports: []rdma.Port{{Number: 1, State: "ACTIVE", Transport: rdma.IWARP}}}
	noVerbs := rdma.Device{Name: "mlx5_8", Ports: []rdma.Port{{Number: 1, State: "ACTIVE", Transport: rdma.InfiniBand}}}
	devs := []rdma.Device{iwarp, ibHCA("mlx5_0", "fe80:0000:0000:0001", "ACTIVE"), ibHCA("mlx5_1", "fe80:0000:0000:0002", "DOWN"), noVerbs,
		ibHCA("mlx5_2", "fe80:0000:0000:0003", "ACTIVE"), vf}
	rails := Rails(devs, RailRule{})
	var got []string
	for _, r := range rails {
		got = append(got, fmt.Sprintf("%d %s %s %v %s", r.Index, r.Port.Name(), r.State, r.Usable, r.Subnet))
	}
	// A port that is down keeps its place: rail 2 stays mlx5_2.
	want := []string{
		"0 mlx5_0/1 ACTIVE true ib fe80:0000:0000:0001",
		"1 mlx5_1/1 DOWN false ib fe80:0000:0000:0002",
		"2 mlx5_2/1 ACTIVE true ib fe80:0000:0000:0003",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Rails:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestMatchRail(t *testing.T) {
	// Two 8-HCA InfiniBand nodes, one subnet prefix per rail; the peer's
	// HCAs are numbered in another order than its rails (a node whose
	// NICs enumerate differently).
	var clientIB, peerIB []rdma.Device
	for i := range 8 {
		clientIB = append(clientIB, ibHCA(fmt.Sprintf("mlx5_%d", i), fmt.Sprintf("fe80:0000:0000:%04x", i+1), "ACTIVE"))
		peerIB = append(peerIB, ibHCA(fmt.Sprintf("mlx5_%d", i), fmt.Sprintf("fe80:0000:0000:%04x", 8-i), "ACTIVE"))
	}
	halfIB := peerIB[:4]
	// RoCE v2 rails on IPv4 and IPv6 subnets.
	clientRoCE := []rdma.Device{
		roceNIC("rxe0", "ACTIVE", v4GID("10.0.3.2")),
		roceNIC("rxe1", "ACTIVE", v4GID("10.0.4.2")),
		roceNIC("rxe2", "ACTIVE", "fd00:0000:0000:0005:0000:0000:0000:0002"),
	}
	peerRoCE := []rdma.Device{
		// The peer's port on 10.0.4/24 also holds an address of another
		// subnet, listed first: the match picks the GID in the subnet.
		roceNIC("mlx5_0", "ACTIVE", "fd00:0000:0000:0005:0000:0000:0000:0001"),
		roceNIC("mlx5_1", "ACTIVE", v4GID("192.168.7.1"), v4GID("10.0.4.1")),
		roceNIC("mlx5_2", "ACTIVE", v4GID("10.0.3.1")),
		roceNIC("mlx5_3", "DOWN", v4GID("10.0.9.1")),
	}
	tests := []struct {
		name         string
		client, peer []rdma.Device
		rule         RailRule
		rail         int
		want         string // the peer's port and GID index, or the error
	}{
		{"ib index", clientIB, peerIB, RailRule{Match: RailMatchIndex}, 5, "mlx5_5/1 gid -1"},
		{"ib subnet prefix", clientIB, peerIB, RailRule{Match: RailMatchSubnet}, 5, "mlx5_2/1 gid -1"},
		{"ib subnet prefix, rail 0", clientIB, peerIB, RailRule{Match: RailMatchSubnet}, 0, "mlx5_7/1 gid -1"},
		{"fewer rails on the peer, index", clientIB, halfIB, RailRule{Match: RailMatchIndex}, 5,
			"error: this node has no rail 5: it has 4 (0 mlx5_0/1, 1 mlx5_1/1, 2 mlx5_2/1, 3 mlx5_3/1)"},
		{"fewer rails on the peer, subnet", clientIB, halfIB, RailRule{Match: RailMatchSubnet}, 0,
			"error: this node has no port on the peer's rail 0 subnet ib fe80:0000:0000:0001 (its rails: 0 mlx5_0/1 ib fe80:0000:0000:0008, 1 mlx5_1/1 ib fe80:0000:0000:0007, 2 mlx5_2/1 ib fe80:0000:0000:0006, 3 mlx5_3/1 ib fe80:0000:0000:0005)"},
		{"roce v4 subnet", clientRoCE, peerRoCE, RailRule{Match: RailMatchSubnet}, 1, "mlx5_1/1 gid 3 10.0.4.1"},
		{"roce v4 subnet, rail 0", clientRoCE, peerRoCE, RailRule{Match: RailMatchSubnet}, 0, "mlx5_2/1 gid 2 10.0.3.1"},
		{"roce v6 subnet", clientRoCE, peerRoCE, RailRule{Match: RailMatchSubnet}, 2, "mlx5_0/1 gid 2 fd00:0:0:5::1"},
		{"roce index", clientRoCE, peerRoCE, RailRule{Match: RailMatchIndex}, 1, "mlx5_1/1 gid 2 192.168.7.1"},
		// A /16 puts 10.0.3/24 and 10.0.4/24 on one rail: the first port wins.
		{"roce wider prefix", clientRoCE, peerRoCE, RailRule{Match: RailMatchSubnet, IPv4Prefix: 16}, 1, "mlx5_1/1 gid 3 10.0.4.1"},
		{"roce v6 narrower prefix", clientRoCE, peerRoCE, RailRule{Match: RailMatchSubnet, IPv6Prefix: 126}, 2, "mlx5_0/1 gid 2 fd00:0:0:5::1"},
		{"roce v6 /128", clientRoCE, peerRoCE, RailRule{Match: RailMatchSubnet, IPv6Prefix: 128}, 2,
			"error: this node has no port on the peer's rail 2 subnet fd00:0:0:5::2/128 (its rails: 0 mlx5_0/1 fd00:0:0:5::1/128, 1 mlx5_1/1 192.168.7.0/24, 2 mlx5_2/1 10.0.3.0/24, 3 mlx5_3/1 10.0.9.0/24 DOWN)"},
		{"peer port down", append(clientRoCE, roceNIC("rxe3", "ACTIVE", v4GID("10.0.9.2"))), peerRoCE, RailRule{Match: RailMatchSubnet}, 3,
			"error: this node's rail 3 (mlx5_3/1) is DOWN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.rule.Validate(); err != nil {
				t.Fatal(err)
			}
			rails := Rails(tt.client, tt.rule)
			req := tt.rule.request(rails[tt.rail])
			// What the server does: the client's rule, from the request.
			r, err := MatchRail(Rails(tt.peer, railRuleFor(*req)), *req)
			got := ""
			if err != nil {
				got = "error: " + err.Error()
			} else {
				got = fmt.Sprintf("%s gid %d", r.Port.Name(), r.Port.GIDIndex)
				if r.Port.IP != "" {
					got += " " + r.Port.IP
				}
			}
			if got != tt.want {
				t.Errorf("rail %d (%s) matched\n%s\nwant\n%s", tt.rail, req.Subnet, got, tt.want)
			}
		})
	}
}

func TestRailRuleValidate(t *testing.T) {
	for _, r := range []RailRule{{Match: "slot"}, {IPv4Prefix: 33}, {IPv6Prefix: -1}} {
		if err := r.Validate(); err == nil {
			t.Errorf("%+v validated", r)
		}
	}
	bad := Request{Kind: KindWriteBW, Size: 2, Iterations: 1, Depth: 1, Timeout: 1e9}
	for _, rr := range []RailRequest{{Index: -1}, {Index: 2000}, {Match: RailMatchSubnet}, {Match: "slot"}} {
		bad.Rail = &rr
		if err := bad.Validate(); err == nil {
			t.Errorf("rail request %+v validated", rr)
		}
	}
	tcp := DefaultRequest(KindTCPBW)
	tcp.Rail = &RailRequest{}
	if err := tcp.Validate(); err == nil || !strings.Contains(err.Error(), "no rails") {
		t.Errorf("a TCP kind with a rail: %v", err)
	}
}
