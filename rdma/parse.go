package rdma

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"strconv"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"
)

// Pure parsers of the sysfs attributes in docs/host-files.md. Callers pass
// the attribute trimmed of white space (hostfs.ReadString does that).

// parseState parses the "<number>: <name>" attributes: a port's state
// ("4: ACTIVE") and phys_state ("5: LinkUp"), and a device's node_type
// ("1: CA"). The kernel prints them with "%d: %s" from u8 enums, and some
// names hold a space ("7: Phy Test", "6: usNIC UDP").
func parseState(s string) (string, int, error) {
	num, name, ok := strings.Cut(s, ": ")
	n, err := strconv.ParseUint(num, 10, 8)
	if !ok || err != nil || name == "" || name != strings.TrimSpace(name) || !printable(name) {
		return "", 0, fmt.Errorf("%q is not \"<number>: <name>\"", s)
	}
	return name, int(n), nil
}

// maxRateGbps bounds a believable port rate; the fastest link today is
// 12X XDR at 2400 Gb/s.
const maxRateGbps = 100_000

// parseRate parses a port's rate, "400 Gb/sec (4X NDR)" -> 400. The kernel
// prints "%d%s Gb/sec (%dX%s)" where %s is ".5" or "", so the number is
// plain decimal ("2.5 Gb/sec (1X SDR)"); signs, exponents and the like are
// garbage.
func parseRate(s string) (float64, error) {
	num, detail, ok := strings.Cut(s, " Gb/sec (")
	detail, closed := strings.CutSuffix(detail, ")")
	if !ok || !closed || detail == "" || !printable(detail) || !isDecimal(num) {
		return 0, fmt.Errorf("rate %q is not \"<number> Gb/sec (<width>X <speed>)\"", s)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v > maxRateGbps {
		return 0, fmt.Errorf("rate %q is out of range", s)
	}
	return v, nil
}

// isDecimal reports whether s is digits, optionally with a fraction ("2.5").
func isDecimal(s string) bool {
	whole, frac, hasFrac := strings.Cut(s, ".")
	return allDigits(whole) && (!hasFrac || allDigits(frac))
}

func allDigits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// parseLID parses a port's lid or sm_lid, which the kernel prints as
// "0x%x" of a u32 ("0x1a"; "0x0" on RoCE and without a subnet manager).
func parseLID(s string) (uint32, error) {
	hex, ok := strings.CutPrefix(s, "0x")
	v, err := strconv.ParseUint(hex, 16, 32)
	if !ok || err != nil {
		return 0, fmt.Errorf("LID %q is not a 32-bit \"0x<hex>\"", s)
	}
	return uint32(v), nil
}

// parseGID checks a GID table entry, printed by the kernel with %pI6 as
// eight groups of four hex digits ("fe80:0000:0000:0000:b83f:d203:00a4:5ef0"),
// and reports whether it is all zeros: an unpopulated entry.
func parseGID(s string) (zero bool, err error) {
	zero, ok := hexGroups(s, 8)
	if !ok {
		return false, fmt.Errorf("GID %q is not eight colon-separated groups of four hex digits", s)
	}
	return zero, nil
}

// parseGUID checks a node_guid or sys_image_guid ("b83f:d203:00a4:5ef0",
// the kernel's "%04x:%04x:%04x:%04x").
func parseGUID(s string) error {
	if _, ok := hexGroups(s, 4); !ok {
		return fmt.Errorf("GUID %q is not four colon-separated groups of four hex digits", s)
	}
	return nil
}

// hexGroups checks that s is n colon-separated groups of four hex digits
// and reports whether every digit is zero.
func hexGroups(s string, n int) (zero, ok bool) {
	if len(s) != 5*n-1 {
		return false, false
	}
	zero = true
	for i := range len(s) {
		c := s[i]
		switch {
		case i%5 == 4:
			if c != ':' {
				return false, false
			}
		case c == '0':
		case '1' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
			zero = false
		default:
			return false, false
		}
	}
	return zero, true
}

// Bounds for parseInt.
const (
	maxNUMANode = math.MaxInt16 // far above the kernel's MAX_NUMNODES (1024)
	maxDevPort  = math.MaxUint16
	maxIndex    = math.MaxInt32 // port numbers, GID indexes, MTUs
)

// parseInt parses a decimal attribute or directory name within [lo, hi].
func parseInt(s string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%q is not an integer in [%d, %d]", s, lo, hi)
	}
	return n, nil
}

// isBDF reports whether s is a PCI address, DDDD:BB:DD.F. The domain may be
// longer than four digits (Intel VMD domains start at 0x10000).
func isBDF(s string) bool {
	parts := strings.Split(s, ":")
	if len(parts) != 3 || len(parts[0]) < 4 || len(parts[0]) > 8 || len(parts[1]) != 2 || len(parts[2]) != 4 {
		return false
	}
	dev, fn, _ := strings.Cut(parts[2], ".")
	return isHex(parts[0]) && isHex(parts[1]) && isHex(dev) && len(fn) == 1 && '0' <= fn[0] && fn[0] <= '7'
}

func isHex(s string) bool {
	for i := range len(s) {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return s != ""
}

// validNetdevName applies the kernel's rule for interface names
// (dev_valid_name): 1 to 15 bytes, not "." or "..", no '/', ':' or white
// space. Names read from files are used in paths, so this also keeps a
// garbage name from pointing anywhere else under /sys.
func validNetdevName(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." || !utf8.ValidString(s) {
		return false
	}
	return !strings.ContainsFunc(s, func(r rune) bool { return r == '/' || r == ':' || unicode.IsSpace(r) || r == 0 })
}

// transportOf maps a port's link_layer to its transport. iWARP devices
// (node type RNIC: siw, cxgb4, irdma in iWARP mode) also report "Ethernet",
// but they are not RoCE.
func transportOf(linkLayer, nodeType string) (Transport, error) {
	switch {
	case linkLayer == "InfiniBand":
		return InfiniBand, nil
	case linkLayer == "Ethernet" && nodeType == "RNIC":
		return IWARP, nil
	case linkLayer == "Ethernet":
		return RoCE, nil
	}
	return "", fmt.Errorf("unknown link layer %q", linkLayer)
}

// roceHeaderBytes is what the kernel's iboe_get_mtu (include/rdma/ib_addr.h)
// takes off the netdev MTU for RoCE headers: GRH 40 + UDP 8 + BTH 12 +
// XRC extended header 4 + AtomicETH 28 + ICRC 4.
const roceHeaderBytes = 40 + 8 + 12 + 4 + 28 + 4

// activeMTU is the active MTU of a RoCE port, derived from its netdev MTU
// the way the kernel does: the largest IB MTU that fits in what the headers
// leave, 0 if none does.
func activeMTU(netdevMTU int) int {
	for _, m := range []int{4096, 2048, 1024, 512, 256} {
		if netdevMTU >= m+roceHeaderBytes { // not MTU-96 >= m: that overflows for huge negative MTUs
			return m
		}
	}
	return 0
}

// gidAttrUnset reports whether reading gid_attrs/types/<i> or ndevs/<i>
// failed because there is nothing to show: the kernel answers ENODATA for an
// unpopulated entry (EINVAL before Linux 5.10) and EINVAL for ndevs of an
// entry without a netdev (every InfiniBand GID). Kernels before gid_attrs
// existed have no file at all.
func gidAttrUnset(err error) bool {
	return errors.Is(err, syscall.ENODATA) || errors.Is(err, syscall.EINVAL) || errors.Is(err, fs.ErrNotExist)
}

// printable reports whether s is UTF-8 without control characters: what
// every one-line attribute we read holds.
func printable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) })
}

// physStates are the kernel's names of the physical port states, indexed
// by their number (phys_state_to_str in drivers/infiniband/core/sysfs.c).
var physStates = []string{1: "Sleep", 2: "Polling", 3: "Disabled", 4: "PortConfigurationTraining", 5: "LinkUp",
	6: "LinkErrorRecovery", 7: "Phy Test"}

// PhysStateID is the number the kernel prints before a physical state's
// name ("5: LinkUp"); false for a name it has no number for.
func PhysStateID(name string) (int, bool) {
	for i, n := range physStates {
		if n != "" && n == name {
			return i, true
		}
	}
	return 0, false
}
