package topology

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Pure parsers of the kernel's text formats. Discover reads the files and
// hands their content here; none of these touch the filesystem.

// parseMemTotal finds the MemTotal line of /proc/meminfo ("MemTotal:
// 16315220 kB") or of a node's meminfo ("Node 0 MemTotal: 1056499896 kB")
// and returns it in bytes, with the node number of the "Node N" prefix
// (-1 when there is none).
func parseMemTotal(s string) (node int, bytes uint64, err error) {
	for line := range strings.Lines(s) {
		f := strings.Fields(line)
		node = -1
		if len(f) > 0 && f[0] == "Node" {
			if len(f) < 2 {
				return -1, 0, fmt.Errorf("meminfo line %q: no node number", strings.TrimSpace(line))
			}
			n, err := strconv.Atoi(f[1])
			if err != nil || n < 0 {
				return -1, 0, fmt.Errorf("meminfo line %q: bad node number", strings.TrimSpace(line))
			}
			node, f = n, f[2:]
		}
		if len(f) == 0 || f[0] != "MemTotal:" {
			continue
		}
		// The kernel prints every size in meminfo in kB (KiB).
		if len(f) != 3 || f[2] != "kB" {
			return -1, 0, fmt.Errorf("meminfo line %q: want \"MemTotal: <n> kB\"", strings.TrimSpace(line))
		}
		kb, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil || kb > math.MaxUint64/1024 {
			return -1, 0, fmt.Errorf("meminfo line %q: bad size", strings.TrimSpace(line))
		}
		return node, kb * 1024, nil
	}
	return -1, 0, errors.New("meminfo has no MemTotal line")
}

// parseDistances reads a node's distance file: one decimal distance per
// online node, space-separated ("10 21").
func parseDistances(s string) ([]int, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return nil, errors.New("distance list is empty")
	}
	out := make([]int, len(f))
	for i, w := range f {
		d, err := strconv.Atoi(w)
		if err != nil || d < 0 || d > 255 { // the ACPI SLIT holds one byte per entry
			return nil, fmt.Errorf("distance list %q: bad distance %q", s, w)
		}
		out[i] = d
	}
	return out, nil
}

// parseModules reads /proc/modules ("nvidia_peermem 16384 0 - Live
// 0xffffffffc0b5f000 (POE)" per line) and returns the module names, sorted
// and unique. Bad lines are reported; the good ones are still returned.
func parseModules(s string) ([]string, error) {
	var names []string
	var bad []string
	n := 0
	for line := range strings.Lines(s) {
		n++
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		// name size refcount deps state address [taints]; the size tells a
		// real line from garbage that happens to start with a word.
		if len(f) < 2 || !isModuleName(f[0]) || !isDecimal(f[1]) {
			bad = append(bad, fmt.Sprintf("line %d %q", n, truncate(strings.TrimSpace(line), 60)))
			continue
		}
		names = append(names, f[0])
	}
	slices.Sort(names)
	names = slices.Compact(names)
	if len(bad) > 0 {
		return names, fmt.Errorf("%d malformed module lines, first: %s", len(bad), bad[0])
	}
	return names, nil
}

// isModuleName accepts the names /proc/modules shows: the kernel turns
// dashes in module names into underscores, so only [A-Za-z0-9_] remain.
func isModuleName(s string) bool {
	if s == "" || len(s) > 64 { // MODULE_NAME_LEN is 64 with the NUL
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

func isDecimal(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// parseNVIDIAVersion reads /proc/driver/nvidia/version:
//
//	NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.15  Release Build  (...)  Tue Mar  5 ...
//	GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)
//
// The proprietary module says "NVIDIA UNIX x86_64 Kernel Module  550.54.15
// ...". The version is the first dotted number on the NVRM line (the GCC
// line has a dotted number too, so only the NVRM line is looked at).
func parseNVIDIAVersion(s string) (NVIDIAKernelModule, error) {
	for line := range strings.Lines(s) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "NVRM version:")
		if !ok {
			continue
		}
		for _, w := range strings.Fields(rest) {
			if isDottedVersion(w) {
				return NVIDIAKernelModule{Version: w, Open: strings.Contains(rest, "Open Kernel Module")}, nil
			}
		}
		return NVIDIAKernelModule{}, fmt.Errorf("NVRM line %q has no version number", truncate(strings.TrimSpace(line), 120))
	}
	return NVIDIAKernelModule{}, errors.New("no \"NVRM version:\" line")
}

// isDottedVersion accepts "550.54.15", "390.157": digits separated by dots,
// at least one dot.
func isDottedVersion(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return false
	}
	for _, p := range parts {
		if !isDecimal(p) {
			return false
		}
	}
	return true
}

// parseLinkSpeed turns a PCIe link speed attribute into the PCIe
// generation. Kernels since 4.19 write "32.0 GT/s PCIe"; older ones
// "8 GT/s" or "8.0 GT/s"; "2.5 GT/s" is Gen1. A link the kernel cannot
// name reads "Unknown" (older kernels: "Unknown speed"), which is
// generation 0 and not an error.
func parseLinkSpeed(s string) (int, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.HasPrefix(s, "Unknown") {
		return 0, nil
	}
	num, rest, ok := strings.Cut(s, " ")
	if !ok || (rest != "GT/s" && rest != "GT/s PCIe") {
		return 0, fmt.Errorf("link speed %q: want \"<n> GT/s [PCIe]\"", truncate(s, 40))
	}
	switch num {
	case "2.5":
		return 1, nil
	case "5", "5.0":
		return 2, nil
	case "8", "8.0":
		return 3, nil
	case "16", "16.0":
		return 4, nil
	case "32", "32.0":
		return 5, nil
	case "64", "64.0":
		return 6, nil
	case "128", "128.0": // PCIe 7.0
		return 7, nil
	}
	return 0, fmt.Errorf("link speed %q: unknown rate", truncate(s, 40))
}

// parseLinkWidth reads current_link_width/max_link_width: lanes in decimal
// ("16"); 0 when the link is down.
func parseLinkWidth(s string) (int, error) {
	s = strings.TrimSpace(s)
	w, err := strconv.Atoi(s)
	if err != nil || w < 0 || w > 32 { // x32 is the widest link PCIe defines
		return 0, fmt.Errorf("link width %q: want a lane count 0-32", truncate(s, 40))
	}
	return w, nil
}

// parseHex reads a sysfs hex attribute ("0x030200", "0x10de") of at most
// digits hex digits; the kernel always writes the 0x prefix.
func parseHex(s string, digits int) (uint32, error) {
	s = strings.TrimSpace(s)
	h, ok := strings.CutPrefix(s, "0x")
	if !ok || h == "" || len(h) > digits {
		return 0, fmt.Errorf("%q: want 0x and 1-%d hex digits", truncate(s, 40), digits)
	}
	v, err := strconv.ParseUint(h, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("%q: want 0x and 1-%d hex digits", truncate(s, 40), digits)
	}
	return uint32(v), nil
}

// parseClass reads a PCI class attribute: 24 bits, base class, subclass and
// programming interface ("0x030200").
func parseClass(s string) (uint32, error) { return parseHex(s, 6) }

// parseID reads a PCI vendor or device attribute (16 bits, "0x10de").
func parseID(s string) (uint32, error) { return parseHex(s, 4) }

// PCI vendors and class codes that matter (PCI Code and ID Assignment spec).
const (
	vendorNVIDIA = 0x10de
	vendorAMD    = 0x1002

	classVGA        = 0x0300 // base class 03 display, subclass 00 VGA
	class3D         = 0x0302 // display, 3D controller (datacenter GPUs)
	classEthernet   = 0x0200 // network, Ethernet
	classInfiniBand = 0x0207 // network, InfiniBand
	classBridgeMisc = 0x0680 // bridge, other (NVSwitch)
	// AMD Instinct accelerators do not all call themselves display devices:
	// MI300X is a processing accelerator, some MI200s are "display, other".
	classDisplayOther = 0x0380
	classAccelerator  = 0x1200
)

// classify says what a device with this class code and vendor is to us, or
// false when we do not care about it.
func classify(class, vendor uint32) (PCIKind, bool) {
	switch class >> 8 {
	case classVGA, class3D:
		if vendor == vendorNVIDIA || vendor == vendorAMD {
			return KindGPU, true
		}
	case classDisplayOther, classAccelerator:
		if vendor == vendorAMD {
			return KindGPU, true
		}
	case classEthernet, classInfiniBand:
		return KindNIC, true
	case classBridgeMisc:
		if vendor == vendorNVIDIA {
			return KindNVSwitch, true
		}
	}
	return "", false
}

// parsePCIPath turns the resolved sysfs path of a PCI device into its chain
// from the outermost host bridge down to the device:
//
//	/sys/devices/pci0000:15/0000:15:01.0/0000:16:00.0/0000:18:00.0
//	-> [pci0000:15 0000:15:01.0 0000:16:00.0 0000:18:00.0]
//
// Components before the first host bridge are platform glue (Hyper-V puts
// the bridge under /sys/devices/LNXSYSTM:00/.../VMBUS:01/<guid>/) and are
// dropped. Intel VMD nests a second host bridge (pci10000:e0) below its
// endpoint; it stays in the chain.
func parsePCIPath(resolved, addr string) ([]string, error) {
	rest, ok := strings.CutPrefix(resolved, "/sys/devices/")
	if !ok {
		return nil, fmt.Errorf("PCI device path %q is not under /sys/devices", truncate(resolved, 200))
	}
	parts := strings.Split(rest, "/")
	start := slices.IndexFunc(parts, isHostBridge)
	if start < 0 {
		return nil, fmt.Errorf("PCI device path %q has no host bridge (pciDDDD:BB)", truncate(resolved, 200))
	}
	parts = parts[start:]
	for _, p := range parts[1:] {
		if !isBDF(p) && !isHostBridge(p) {
			return nil, fmt.Errorf("PCI device path %q: %q is not a PCI address", truncate(resolved, 200), truncate(p, 40))
		}
	}
	if len(parts) < 2 || parts[len(parts)-1] != addr {
		return nil, fmt.Errorf("PCI device path %q does not end at %s", truncate(resolved, 200), addr)
	}
	return parts, nil
}

// isHostBridge matches "pci0000:15": "pci", a domain, a colon and a bus.
func isHostBridge(s string) bool {
	rest, ok := strings.CutPrefix(s, "pci")
	if !ok {
		return false
	}
	dom, bus, ok := strings.Cut(rest, ":")
	return ok && isHexN(dom, 4, 8) && isHexN(bus, 2, 2)
}

// isBDF matches a PCI address "0000:18:00.0": domain (4 hex digits, more
// with VMD's 10000+ domains), bus, device and function.
func isBDF(s string) bool {
	dom, rest, ok := strings.Cut(s, ":")
	if !ok || !isHexN(dom, 4, 8) {
		return false
	}
	bus, rest, ok := strings.Cut(rest, ":")
	if !ok || !isHexN(bus, 2, 2) {
		return false
	}
	dev, fn, ok := strings.Cut(rest, ".")
	return ok && isHexN(dev, 2, 2) && len(fn) == 1 && fn[0] >= '0' && fn[0] <= '7'
}

func isHexN(s string, minLen, maxLen int) bool {
	if len(s) < minLen || len(s) > maxLen {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// truncate keeps error messages about garbage short.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary so the message stays valid UTF-8.
	for n > 0 && n < len(s) && s[n]&0xc0 == 0x80 {
		n--
	}
	return s[:n] + "..."
}
