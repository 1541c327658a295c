package topology

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
)

// HugePages is one huge page size the kernel command line reserves, with
// what the kernel allocated. Boot-time reservations fall short without a
// word but a dmesg line when memory is short or fragmented on a node.
type HugePages struct {
	SizeKB uint64 `json:"size_kb"`
	// Requested is the number of pages hugepages= asks for: the sum of
	// RequestedPerNode in the node format ("hugepages=0:4,1:4"), where
	// every node gets its own count; otherwise the kernel spreads them.
	Requested        uint64      `json:"requested"`
	RequestedPerNode []NodePages `json:"requested_per_node,omitempty"`
	// Allocated is the size's nr_hugepages, AllocatedPerNode the nodes'.
	Allocated        uint64      `json:"allocated"`
	AllocatedPerNode []NodePages `json:"allocated_per_node,omitempty"`
	// NoPool says the kernel has no pool of this size: it rejected the
	// size (hugepagesz= names one the CPU does not have).
	NoPool bool `json:"no_pool,omitempty"`
}

// NodePages is a number of huge pages on one NUMA node.
type NodePages struct {
	Node  int    `json:"node"`
	Pages uint64 `json:"pages"`
}

// maxNodes bounds node numbers in hugepages=: the kernel's MAX_NUMNODES
// is 1<<NODES_SHIFT, at most 1024 in the distributions' configs.
const maxNodes = 1024

// hugeRequest is one hugepages= the kernel takes; SizeKB 0 is the default
// huge page size (default_hugepagesz=, or the architecture's).
type hugeRequest struct {
	SizeKB  uint64
	Pages   uint64
	PerNode []NodePages
}

// hugeCmdline is what the kernel command line reserves.
type hugeCmdline struct {
	Requests []hugeRequest
	// DefaultKB is default_hugepagesz=; 0 when not given.
	DefaultKB uint64
}

// parseHugeCmdline reads hugepages=, hugepagesz= and default_hugepagesz=
// in order, as mm/hugetlb.c does: hugepages= counts pages of the size the
// latest hugepagesz= (or default_hugepagesz=) named, of the default size
// before any; a size named twice, hugepages= twice for one size, a second
// default_hugepagesz= and unparsable values are ignored by the kernel with
// a warning, so they are errors here and reserve nothing. Requests are
// returned in command line order.
func parseHugeCmdline(s string) (hugeCmdline, error) {
	var out hugeCmdline
	var errs []error
	// cur is the size the next hugepages= counts; valid is false after a
	// hugepagesz= the kernel ignored, whose hugepages= it ignores too.
	cur, valid := uint64(0), true
	sizes := map[uint64]bool{}   // named by hugepagesz=
	counted := map[uint64]bool{} // sizes a hugepages= already counted
	for _, p := range splitCmdline(s) {
		if !p.hasValue {
			continue
		}
		switch p.name {
		case "hugepagesz", "default_hugepagesz":
			kb, err := parseHugeSize(p.value)
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("%s=%s: %w", p.name, truncate(p.value, 40), err))
				valid = false
			case p.name == "default_hugepagesz" && out.DefaultKB != 0:
				errs = append(errs, fmt.Errorf("default_hugepagesz=%s: given twice; the kernel keeps the first", truncate(p.value, 40)))
			case p.name == "default_hugepagesz":
				out.DefaultKB, cur, valid = kb, kb, true
			case kb == out.DefaultKB && !counted[0]:
				// Naming the default size again is allowed while its count
				// is not yet given.
				cur, valid = kb, true
			case sizes[kb] || kb == out.DefaultKB:
				errs = append(errs, fmt.Errorf("hugepagesz=%s: size named twice; the kernel ignores it and its hugepages=", p.value))
				valid = false
			default:
				sizes[kb], cur, valid = true, kb, true
			}
		case "hugepages":
			if !valid {
				valid = true
				continue // already reported with its hugepagesz=
			}
			key := cur
			if key != 0 && key == out.DefaultKB {
				key = 0 // pages of the default size, however named
			}
			if counted[key] {
				errs = append(errs, fmt.Errorf("hugepages=%s: a second count for one size; the kernel keeps the first", truncate(p.value, 40)))
				continue
			}
			r, err := parseHugeCount(p.value)
			if err != nil {
				errs = append(errs, fmt.Errorf("hugepages=%s: %w", truncate(p.value, 40), err))
				continue
			}
			counted[key] = true
			r.SizeKB = key
			out.Requests = append(out.Requests, r)
		}
	}
	return out, errors.Join(errs...)
}

// parseHugeSize reads a huge page size as the kernel's memparse() does for
// these parameters: a number with an optional K, M, G or T suffix (bytes
// without one). A huge page is a power of two of at least 8 KiB.
func parseHugeSize(v string) (uint64, error) {
	shift := 0
	num := v
	if n := len(v); n > 0 {
		switch v[n-1] {
		case 'k', 'K':
			shift = 10
		case 'm', 'M':
			shift = 20
		case 'g', 'G':
			shift = 30
		case 't', 'T':
			shift = 40
		}
		if shift != 0 {
			num = v[:n-1]
		}
	}
	if !isDecimal(num) || len(num) > 20 {
		return 0, errors.New("want a size such as 2M or 1G")
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil || n == 0 || n > math.MaxUint64>>shift {
		return 0, errors.New("want a size such as 2M or 1G")
	}
	b := n << shift
	if b&(b-1) != 0 || b < 8<<10 || bits.TrailingZeros64(b) < 10 {
		return 0, errors.New("not a huge page size (a power of two of at least 8K)")
	}
	return b >> 10, nil
}

// parseHugeCount reads a hugepages= value: a page count, or the node
// format "<node>:<count>[,<node>:<count>...]".
func parseHugeCount(v string) (hugeRequest, error) {
	var r hugeRequest
	if !strings.Contains(v, ":") {
		n, err := parseCount(v)
		if err != nil {
			return r, err
		}
		r.Pages = n
		return r, nil
	}
	for elem := range strings.SplitSeq(v, ",") {
		node, count, ok := strings.Cut(elem, ":")
		if !ok {
			return hugeRequest{}, fmt.Errorf("%q: want <node>:<count>", truncate(elem, 40))
		}
		id, err := strconv.Atoi(node)
		if err != nil || !isDecimal(node) || id >= maxNodes {
			return hugeRequest{}, fmt.Errorf("%q: bad node number", truncate(elem, 40))
		}
		n, err := parseCount(count)
		if err != nil {
			return hugeRequest{}, fmt.Errorf("%q: %w", truncate(elem, 40), err)
		}
		if slices.ContainsFunc(r.PerNode, func(p NodePages) bool { return p.Node == id }) {
			return hugeRequest{}, fmt.Errorf("node %d given twice", id)
		}
		if r.Pages+n < r.Pages {
			return hugeRequest{}, errors.New("count overflows")
		}
		r.PerNode = append(r.PerNode, NodePages{Node: id, Pages: n})
		r.Pages += n
	}
	slices.SortFunc(r.PerNode, func(a, b NodePages) int { return a.Node - b.Node })
	return r, nil
}

func parseCount(s string) (uint64, error) {
	if !isDecimal(s) {
		return 0, fmt.Errorf("%q: want a page count", truncate(s, 40))
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", truncate(s, 40), err)
	}
	return n, nil
}

// parseHugepagesize reads the default huge page size from /proc/meminfo's
// "Hugepagesize:" line; ok is false where the kernel has no hugetlb.
func parseHugepagesize(s string) (kb uint64, ok bool, err error) {
	for line := range strings.Lines(s) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Hugepagesize:" {
			continue
		}
		if len(f) != 3 || f[2] != "kB" {
			return 0, false, fmt.Errorf("meminfo line %q: want \"Hugepagesize: <n> kB\"", strings.TrimSpace(line))
		}
		kb, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil || kb == 0 {
			return 0, false, fmt.Errorf("meminfo line %q: bad size", strings.TrimSpace(line))
		}
		return kb, true, nil
	}
	return 0, false, nil
}
