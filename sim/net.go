package sim

import (
	"fmt"
	"strings"
)

// netdev is a network interface of a PCI function.
type netdev struct {
	name    string
	mtu     int
	address string // "b8:3f:d2:a4:5e:f0", 20 bytes for IPoIB
	speed   int    // Mb/s; -1 when the link is down
	up      bool
	ipoib   bool
	devPort int
}

// loopback writes lo, the one interface without a device.
func (b *builder) loopback() {
	dir := "/sys/devices/virtual/net/lo"
	for _, a := range [][2]string{
		{"mtu", "65536"}, {"address", "00:00:00:00:00:00"}, {"operstate", "unknown"},
		{"carrier", "1"}, {"type", "772"}, {"ifindex", "1"}, {"flags", "0x9"}, {"addr_len", "6"},
	} {
		b.t.attr(dir+"/"+a[0], a[1])
	}
	b.t.link("/sys/class/net/lo", dir)
}

// netdev writes <pci dev>/net/<if> and its /sys/class/net link.
func (b *builder) netdev(d *pciDev, n netdev) {
	b.ifindex++
	dir := d.dir + "/net/" + n.name
	// carrier_changes: the kernel counts the carrier coming up at boot.
	operstate, carrier, flags, duplex, changes := "down", "0", "0x1002", "unknown", "0"
	if n.up {
		operstate, carrier, flags, duplex, changes = "up", "1", "0x1003", "full", "1"
	}
	typ, addrLen := "1", "6" // ARPHRD_ETHER
	if n.ipoib {
		typ, addrLen = "32", "20" // ARPHRD_INFINIBAND
	}
	for _, a := range [][2]string{
		{"mtu", itoa(n.mtu)}, {"address", n.address}, {"operstate", operstate},
		{"carrier", carrier}, {"carrier_changes", changes}, {"speed", itoa(n.speed)}, {"duplex", duplex},
		{"dev_port", itoa(n.devPort)}, {"ifindex", itoa(b.ifindex)}, {"type", typ},
		{"addr_len", addrLen}, {"flags", flags}, {"tx_queue_len", "1000"},
	} {
		b.t.attr(dir+"/"+a[0], a[1])
	}
	b.t.link(dir+"/device", d.dir)
	b.t.link("/sys/class/net/"+n.name, dir)
}

// slotName is the PCI part of a predictable interface name: "p24s0", with
// "f1" when the device has more than one function.
func slotName(d *pciDev, multifunction bool) string {
	var bus, slot, fn int
	fmt.Sscanf(d.bdf, "0000:%x:%x.%d", &bus, &slot, &fn)
	s := fmt.Sprintf("p%ds%d", bus, slot)
	if multifunction {
		s += fmt.Sprintf("f%d", fn)
	}
	return s
}

// mac derives a stable MAC address under the vendor's OUI.
func (b *builder) mac(oui [3]byte, key string) [6]byte {
	h := b.hash("mac/" + key)
	return [6]byte{oui[0], oui[1], oui[2], byte(h >> 16), byte(h >> 8), byte(h)}
}

func macString(m [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// guidFromMAC is how Mellanox adapters form node GUIDs: OUI, 03:00, then
// the rest of the base MAC.
func guidFromMAC(m [6]byte) [8]byte {
	return [8]byte{m[0], m[1], m[2], 0x03, 0x00, m[3], m[4], m[5]}
}

// guidString is the sysfs form "b83f:d203:00a4:5ef0".
func guidString(g [8]byte) string {
	return fmt.Sprintf("%02x%02x:%02x%02x:%02x%02x:%02x%02x", g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7])
}

// gidString formats a 16-byte GID as eight groups of four hex digits.
func gidString(g [16]byte) string {
	parts := make([]string, 8)
	for i := range parts {
		parts[i] = fmt.Sprintf("%02x%02x", g[2*i], g[2*i+1])
	}
	return strings.Join(parts, ":")
}

// linkLocalGID is fe80::<interface id>.
func linkLocalGID(id [8]byte) [16]byte {
	var g [16]byte
	g[0], g[1] = 0xfe, 0x80
	copy(g[8:], id[:])
	return g
}

// eui64 turns a MAC into the modified EUI-64 interface id RoCE uses for its
// link-local GID: flip the universal/local bit, put ff:fe in the middle.
func eui64(m [6]byte) [8]byte {
	return [8]byte{m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]}
}

// ipv4GID is the IPv4-mapped GID ::ffff:a.b.c.d.
func ipv4GID(ip [4]byte) [16]byte {
	var g [16]byte
	g[10], g[11] = 0xff, 0xff
	copy(g[12:], ip[:])
	return g
}

// gidTableSize is the number of GID entries written per port; the kernel
// shows the whole table with the unused entries all zeros.
const gidTableSize = 16

// nvidiaOUI is the OUI of Mellanox/NVIDIA adapters (b8:3f:d2).
func nvidiaOUI() [3]byte { return [3]byte{0xb8, 0x3f, 0xd2} }

// mlx5 describes one port of a Mellanox adapter: its RDMA device, netdev
// and interrupts.
type mlx5 struct {
	rdma   string // "mlx5_0"
	id     pciID
	hca    hca
	ib     bool   // InfiniBand; otherwise Ethernet with RoCE
	rate   string // "400 Gb/sec (4X NDR)"
	speed  int    // netdev Mb/s
	mtu    int
	ipv4   [4]byte // RoCE: the address behind GIDs 2 and 3
	lid    int     // InfiniBand: assigned by the subnet manager
	vector int     // completion vectors (mlx5_comp0..N-1)
	// pfc is the mask of priorities with PFC on (Ethernet); mlx5 ships
	// with none, and with ECN on for every priority.
	pfc uint8
}

// mlx5 adds a single-function Mellanox device under parent with its netdev
// (IPoIB "ibp24s0" or Ethernet "enp24s0np0"), RDMA device and verbs device.
func (b *builder) mlx5(parent *pciDev, n mlx5) *pciDev {
	if r, ok := b.faults.rate[n.rdma]; ok {
		n.rate = r
	}
	d := b.endpoint(parent, 0, n.id)
	if b.hcas == nil {
		b.hcas = map[string]logHCA{}
	}
	b.hcas[n.rdma] = logHCA{dev: d, fw: n.hca.fw, id: n.id}
	mac := b.mac(nvidiaOUI(), d.bdf)
	guid := guidFromMAC(mac)
	nd := netdev{mtu: n.mtu, speed: n.speed, up: true}
	if n.ib {
		nd.name, nd.ipoib = "ib"+slotName(d, false), true
		// IPoIB hardware address: flags and QP number, then the port GID.
		gid := linkLocalGID(guid)
		parts := []string{"00", "00", "10", "49"}
		for _, x := range gid {
			parts = append(parts, fmt.Sprintf("%02x", x))
		}
		nd.address = strings.Join(parts, ":")
	} else {
		nd.name, nd.address = "en"+slotName(d, false)+"np0", macString(mac)
	}
	b.netdev(d, nd)
	if !n.ib {
		b.roceQoS(d.dir+"/net/"+nd.name, nd.name, n.rdma, n.pfc)
	}

	names := []string{"mlx5_async0@pci:" + d.bdf}
	for i := range n.vector {
		names = append(names, fmt.Sprintf("mlx5_comp%d@pci:%s", i, d.bdf))
	}
	d.irqs(true, names...)

	dir := d.dir + "/infiniband/" + n.rdma
	t := b.t
	for _, a := range [][2]string{
		{"node_type", "1: CA"},
		{"node_guid", guidString(guid)},
		{"sys_image_guid", guidString(guid)},
		{"fw_ver", n.hca.fw},
		{"hca_type", n.hca.hcaType},
		{"board_id", n.hca.boardID},
		{"node_desc", b.name + " " + n.rdma},
	} {
		t.attr(dir+"/"+a[0], a[1])
	}
	t.link(dir+"/device", d.dir)
	t.link("/sys/class/infiniband/"+n.rdma, dir)
	b.rdmaPort(dir+"/ports/1", n, guid, mac, nd.name)

	verbs := fmt.Sprintf("uverbs%d", b.verbs)
	vdir := d.dir + "/infiniband_verbs/" + verbs
	t.attr(vdir+"/ibdev", n.rdma)
	t.attr(vdir+"/abi_version", "6")
	t.attr(vdir+"/dev", fmt.Sprintf("231:%d", 192+b.verbs))
	t.link(vdir+"/device", d.dir)
	t.link("/sys/class/infiniband_verbs/"+verbs, vdir)
	t.file("/dev/infiniband/"+verbs, "")
	b.verbs++
	return d
}

// rdmaPort writes ports/1 of an mlx5 device.
func (b *builder) rdmaPort(dir string, n mlx5, guid [8]byte, mac [6]byte, ifname string) {
	t := b.t
	linkLayer, lid, smLID, capMask := "Ethernet", "0x0", "0x0", "0x04010000"
	if n.ib {
		linkLayer, lid, smLID, capMask = "InfiniBand", fmt.Sprintf("0x%x", n.lid), "0x1", "0xa751e848"
	}
	for _, a := range [][2]string{
		{"state", "4: ACTIVE"}, {"phys_state", "5: LinkUp"}, {"link_layer", linkLayer},
		{"rate", n.rate}, {"lid", lid}, {"sm_lid", smLID}, {"sm_sl", "0"},
		{"lid_mask_count", "0"}, {"cap_mask", capMask}, {"pkeys/0", "0xffff"},
	} {
		t.attr(dir+"/"+a[0], a[1])
	}

	// Populated GIDs: InfiniBand has the port GUID's link-local GID only;
	// RoCE has the MAC's link-local GID and the IPv4-mapped address, each
	// as RoCE v1 and v2.
	type gidEntry struct {
		gid   [16]byte
		typ   string
		netdv string
	}
	var gids []gidEntry
	if n.ib {
		gids = append(gids, gidEntry{linkLocalGID(guid), "IB/RoCE v1", ""})
	} else {
		ll, v4 := linkLocalGID(eui64(mac)), ipv4GID(n.ipv4)
		gids = append(gids,
			gidEntry{ll, "IB/RoCE v1", ifname}, gidEntry{ll, "RoCE v2", ifname},
			gidEntry{v4, "IB/RoCE v1", ifname}, gidEntry{v4, "RoCE v2", ifname})
	}
	for i := range gidTableSize {
		var g gidEntry
		if i < len(gids) {
			g = gids[i]
		}
		t.attr(fmt.Sprintf("%s/gids/%d", dir, i), gidString(g.gid))
		// The kernel fails reads of type and ndev on empty entries
		// (ENODATA, EINVAL before 5.10); a fixture cannot fail a read, so
		// those files are left out, which readers treat the same way.
		if g.typ != "" {
			t.attr(fmt.Sprintf("%s/gid_attrs/types/%d", dir, i), g.typ)
		}
		if g.netdv != "" {
			t.attr(fmt.Sprintf("%s/gid_attrs/ndevs/%d", dir, i), g.netdv)
		}
	}
	b.portCounters(dir, n)
}

// portCounters writes counters/ and hw_counters/ with plausible, distinct,
// deterministic values: data and packets from a hash of node and device,
// error counters small and different per counter and device.
func (b *builder) portCounters(dir string, n mlx5) {
	var unit int
	fmt.Sscanf(n.rdma, "mlx5_%d", &unit)
	big := func(key string, lo, span uint64) uint64 { return lo + b.hash(n.rdma+"/"+key)%span }
	small := func(i int) uint64 { return uint64(1 + i + 30*unit) }

	rcvPkts := big("rcv_packets", 100_000_000, 9_000_000_000)
	xmitPkts := big("xmit_packets", 100_000_000, 9_000_000_000)
	mcastRcv, mcastXmit := big("mcast_rcv", 1000, 90_000), big("mcast_xmit", 1000, 90_000)
	// port_*_data count 4-byte words; about 1 KiB per packet on average.
	counters := []struct {
		name string
		v    uint64
	}{
		{"port_xmit_data", xmitPkts * 256},
		{"port_rcv_data", rcvPkts * 256},
		{"port_xmit_packets", xmitPkts},
		{"port_rcv_packets", rcvPkts},
		{"unicast_xmit_packets", xmitPkts - mcastXmit},
		{"unicast_rcv_packets", rcvPkts - mcastRcv},
		{"multicast_xmit_packets", mcastXmit},
		{"multicast_rcv_packets", mcastRcv},
		{"port_xmit_wait", big("xmit_wait", 100_000, 9_000_000)},
		{"port_rcv_errors", small(0)},
		{"port_xmit_discards", small(1)},
		{"symbol_error", small(2)},
		{"link_downed", small(3)},
		{"port_rcv_remote_physical_errors", small(4)},
		{"port_xmit_constraint_errors", small(5)},
		{"port_rcv_constraint_errors", small(6)},
		{"local_link_integrity_errors", small(7)},
		{"excessive_buffer_overrun_errors", small(8)},
		{"VL15_dropped", small(9)},
	}
	for _, c := range counters {
		b.t.attr(dir+"/counters/"+c.name, fmt.Sprint(c.v))
	}

	// mlx5's queue, congestion and RoCE acceleration counters; lifespan
	// is how long (ms) the driver caches them.
	for i, name := range []string{
		"out_of_sequence", "local_ack_timeout_err", "packet_seq_err", "rnr_nak_retry_err",
		"duplicate_request", "implied_nak_seq_err", "rx_icrc_encapsulated", "np_cnp_sent",
		"rp_cnp_handled", "np_ecn_marked_roce_packets", "rp_cnp_ignored", "roce_adp_retrans",
		"roce_slow_restart",
	} {
		b.t.attr(dir+"/hw_counters/"+name, fmt.Sprint(small(10+i)))
	}
	b.t.attr(dir+"/hw_counters/lifespan", "10")
}
