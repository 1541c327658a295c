package amdgpu

import (
	"fmt"
	"slices"
	"strconv"
)

const (
	kfdNodes = "/sys/class/kfd/kfd/topology/nodes"
	// kfdXGMI is the KFD io_link type of an XGMI link (HSA_IOLINKTYPE_XGMI).
	kfdXGMI = 11
)

// kfdNode is what the KFD topology says about one GPU.
type kfdNode struct {
	// computeUnits is the sum over the GPU's KFD nodes: one in SPX, two
	// in DPX, four in QPX, eight in CPX on an MI300X (four on an MI308X).
	computeUnits int
	// xgmiLinks is the number of other GPUs the GPU has an XGMI link to.
	xgmiLinks int
}

// kfdGPUNode is one KFD topology node of a GPU: a whole GPU, or one compute
// partition of it.
type kfdGPUNode struct {
	id       int    // the node's directory number
	domain   uint64 // PCI domain
	location uint64 // location_id as the kernel writes it
	cus      int
	// xgmiTo are the nodes its XGMI io_links lead to.
	xgmiTo []int
}

// kfdTopology reads the KFD topology nodes of the cards' GPUs, by PCI bus
// id. It is best effort: the KFD may be absent (no ROCm userspace needed)
// and then compute units and XGMI links are unknown; nodes that cannot be
// read are left out.
func (b *Backend) kfdTopology(cards []card) map[string]kfdNode {
	names, err := b.fs.Names(kfdNodes)
	if err != nil {
		return map[string]kfdNode{}
	}
	var nodes []kfdGPUNode
	for _, name := range names {
		id, err := strconv.Atoi(name)
		if err != nil || id < 0 {
			continue
		}
		dir := kfdNodes + "/" + name
		s, err := b.fs.ReadString(dir + "/properties")
		if err != nil {
			continue
		}
		props, err := parseKFDProperties(s)
		if err != nil || props["simd_count"] == 0 || props["simd_per_cu"] == 0 {
			continue // a CPU node, or one we cannot read
		}
		n := kfdGPUNode{id: id, domain: props["domain"], location: props["location_id"],
			cus: int(props["simd_count"] / props["simd_per_cu"])}
		links, _ := b.fs.Names(dir + "/io_links")
		for _, l := range links {
			ls, err := b.fs.ReadString(dir + "/io_links/" + l + "/properties")
			if err != nil {
				continue
			}
			if lp, err := parseKFDProperties(ls); err == nil && lp["type"] == kfdXGMI {
				n.xgmiTo = append(n.xgmiTo, int(lp["node_to"]))
			}
		}
		nodes = append(nodes, n)
	}
	addrs := make([]pciAddr, len(cards))
	for i, c := range cards {
		addrs[i] = c.addr
	}
	return kfdGPUs(nodes, addrs)
}

// kfdGPUs assigns KFD GPU nodes to the cards at addrs and sums them up per
// card, by bus id.
//
// The kernel (kfd_topology_add_device) sets a node's location_id to the
// GPU's pci_dev_id (bus << 8 | device << 3 | function) and, when the GPU
// is split into compute partitions, ORs in the partition number: into the
// function bits in most releases, into bits 28-31 in one. So partition 0
// matches the card exactly and partitions 1-7 match only by bus and
// device (every partitionable GPU is function 0 of its device). Its
// sibling partitions are linked to each other by XGMI io_links (type 11)
// too: a GPU's XGMI links are the other GPUs its nodes link to, not the
// links.
func kfdGPUs(nodes []kfdGPUNode, addrs []pciAddr) map[string]kfdNode {
	// gpuOf names the physical GPU of each node: the bus id of its card,
	// or for a GPU that is no amdgpu card here, its location without
	// partition bits.
	gpuOf := map[int]string{}
	for _, n := range nodes {
		loc := n.location & 0xffff
		i := slices.IndexFunc(addrs, func(a pciAddr) bool { return uint64(a.domain) == n.domain && a.id() == loc })
		if i < 0 {
			i = slices.IndexFunc(addrs, func(a pciAddr) bool {
				return uint64(a.domain) == n.domain && a.fn == 0 && a.id() == loc&^7
			})
		}
		if i >= 0 {
			gpuOf[n.id] = addrs[i].String()
		} else {
			gpuOf[n.id] = fmt.Sprintf("%04x:%02x:%02x", n.domain, loc>>8, (loc>>3)&0x1f)
		}
	}
	out := map[string]kfdNode{}
	peers := map[string]map[string]bool{}
	for _, a := range addrs {
		peers[a.String()] = map[string]bool{}
	}
	for _, n := range nodes {
		bus := gpuOf[n.id]
		p, ok := peers[bus]
		if !ok {
			continue // not one of our cards
		}
		k := out[bus]
		k.computeUnits += n.cus
		out[bus] = k
		for _, to := range n.xgmiTo {
			// A link to a node that is no GPU node here (gone, or
			// unreadable) cannot be placed and is left out.
			if peer, ok := gpuOf[to]; ok && peer != bus {
				p[peer] = true
			}
		}
	}
	for bus, p := range peers {
		if k, ok := out[bus]; ok {
			k.xgmiLinks = len(p)
			out[bus] = k
		}
	}
	return out
}
