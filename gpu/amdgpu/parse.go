package amdgpu

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Parsers of the amdgpu driver's text attributes. Each takes the trimmed
// content and returns a clear error for anything else.

// cardName matches the DRM card directories (card0, card12): connectors
// (card0-DP-1) and render nodes are skipped.
var cardName = regexp.MustCompile(`^card(\d+)$`)

// cardIndex returns the number of a card directory name.
func cardIndex(name string) (int, bool) {
	m := cardName.FindStringSubmatch(name)
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(m[1])
	return n, err == nil && n < 1<<16
}

// parsePercent reads gpu_busy_percent / mem_busy_percent as a ratio.
func parsePercent(s string) (float64, error) {
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil || n > 100 {
		return 0, fmt.Errorf("%q is not a percentage", s)
	}
	return float64(n) / 100, nil
}

// parseUint reads a decimal counter or size (mem_info_vram_total, µW, µJ).
func parseUint(s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a decimal number", s)
	}
	return n, nil
}

// parseMilliCelsius reads an hwmon temperature (millidegrees, may be
// negative).
func parseMilliCelsius(s string) (float64, error) {
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not a temperature in millidegrees", s)
	}
	return float64(n) / 1000, nil
}

// dpmLevel matches one line of pp_dpm_sclk / pp_dpm_mclk: "1: 1300Mhz *".
// Levels may read "S: 19Mhz" (sleep) on some ASICs.
var dpmLevel = regexp.MustCompile(`^(\d+|S):\s*(\d+)\s*[Mm][Hh]z\s*(\*?)\s*$`)

// parseDPM returns the frequency of the level marked current ('*'), in Hz.
// A table with no marked level, or with more than one, is an error.
func parseDPM(s string) (float64, error) {
	var (
		cur   float64
		found int
	)
	for line := range strings.SplitSeq(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		m := dpmLevel.FindStringSubmatch(line)
		if m == nil {
			return 0, fmt.Errorf("bad DPM level %q", line)
		}
		if m[3] == "*" {
			mhz, err := strconv.ParseUint(m[2], 10, 32)
			if err != nil {
				return 0, fmt.Errorf("bad DPM level %q", line)
			}
			cur, found = float64(mhz)*1e6, found+1
		}
	}
	switch found {
	case 0:
		return 0, fmt.Errorf("no current DPM level (no '*') in %q", s)
	case 1:
		return cur, nil
	}
	return 0, fmt.Errorf("%d DPM levels marked current", found)
}

// parseUniqueID reads unique_id: up to 16 hex digits, no prefix.
func parseUniqueID(s string) (string, error) {
	s = strings.ToLower(s)
	if s == "" || len(s) > 16 || strings.Trim(s, "0123456789abcdef") != "" {
		return "", fmt.Errorf("%q is not a unique id (hex)", s)
	}
	return s, nil
}

// pciAddr is a PCI function's address: domain, bus, device, function.
type pciAddr struct {
	domain   uint32
	bus, dev uint8
	fn       uint8
}

// String formats the address as sysfs names PCI devices: "0000:05:00.0".
func (a pciAddr) String() string {
	return fmt.Sprintf("%04x:%02x:%02x.%x", a.domain, a.bus, a.dev, a.fn)
}

// id is the kernel's pci_dev_id: bus << 8 | device << 3 | function, the
// low 16 bits of a KFD node's location_id.
func (a pciAddr) id() uint64 { return uint64(a.bus)<<8 | uint64(a.dev)<<3 | uint64(a.fn) }

// parsePCIAddr reads a PCI address as sysfs writes it ("0000:05:00.0",
// lower case hex; VMD domains have five digits and more).
func parsePCIAddr(s string) (pciAddr, error) {
	bad := fmt.Errorf("%q is not a PCI address", s)
	s = strings.ToLower(s)
	dom, rest, ok1 := strings.Cut(s, ":")
	bus, rest, ok2 := strings.Cut(rest, ":")
	dev, fn, ok3 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || !ok3 || len(dom) < 4 || len(dom) > 8 || len(bus) != 2 || len(dev) != 2 || len(fn) != 1 {
		return pciAddr{}, bad
	}
	var a pciAddr
	for _, f := range []struct {
		s    string
		bits int
		max  uint64
		set  func(uint64)
	}{
		{dom, 32, 1<<32 - 1, func(v uint64) { a.domain = uint32(v) }},
		{bus, 8, 0xff, func(v uint64) { a.bus = uint8(v) }},
		{dev, 8, 0x1f, func(v uint64) { a.dev = uint8(v) }},
		{fn, 8, 7, func(v uint64) { a.fn = uint8(v) }},
	} {
		if strings.Trim(f.s, "0123456789abcdef") != "" {
			return pciAddr{}, bad
		}
		v, err := strconv.ParseUint(f.s, 16, f.bits)
		if err != nil || v > f.max {
			return pciAddr{}, bad
		}
		f.set(v)
	}
	return a, nil
}

// parseSlotName finds PCI_SLOT_NAME in a PCI device's uevent
// ("DRIVER=amdgpu\nPCI_SLOT_NAME=0000:09:00.0\n...").
func parseSlotName(s string) (pciAddr, error) {
	for line := range strings.SplitSeq(s, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "PCI_SLOT_NAME="); ok {
			return parsePCIAddr(v)
		}
	}
	return pciAddr{}, errors.New("no PCI_SLOT_NAME")
}

// parseDeviceID reads the PCI "device" attribute ("0x74a1").
func parseDeviceID(s string) (string, error) {
	h, ok := strings.CutPrefix(strings.ToLower(s), "0x")
	if !ok || len(h) != 4 || strings.Trim(h, "0123456789abcdef") != "" {
		return "", fmt.Errorf("%q is not a PCI device id", s)
	}
	return "0x" + h, nil
}

// parseNUMA reads numa_node; -1 means none.
func parseNUMA(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < -1 || n > 1<<12 {
		return 0, fmt.Errorf("%q is not a NUMA node", s)
	}
	return n, nil
}

// parseRASCount reads a ras/*_err_count file: "ue: 0\nce: 12".
func parseRASCount(s string) (ue, ce uint64, err error) {
	seen := map[string]bool{}
	for line := range strings.SplitSeq(s, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			return 0, 0, fmt.Errorf("bad RAS count line %q", line)
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("bad RAS count line %q", line)
		}
		switch k = strings.TrimSpace(k); k {
		case "ue":
			ue = n
		case "ce":
			ce = n
		default:
			return 0, 0, fmt.Errorf("unknown RAS count %q", k)
		}
		seen[k] = true
	}
	if !seen["ue"] || !seen["ce"] {
		return 0, 0, fmt.Errorf("RAS counts %q lack ue or ce", s)
	}
	return ue, ce, nil
}

// partitionMode matches compute (SPX, DPX, TPX, QPX, CPX) and memory (NPS1,
// NPS2, NPS4, NPS8) partition names.
var partitionMode = regexp.MustCompile(`^(SPX|DPX|TPX|QPX|CPX|NPS[1248])$`)

// parsePartition reads current_compute_partition / current_memory_partition.
func parsePartition(s string) (string, error) {
	s = strings.ToUpper(s)
	if !partitionMode.MatchString(s) {
		return "", fmt.Errorf("%q is not a partition mode", s)
	}
	return s, nil
}

// parsePartitionList reads available_*_partition: "SPX, DPX, CPX".
func parsePartitionList(s string) ([]string, error) {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		p, err := parsePartition(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// parseKFDProperties reads a KFD topology properties file: "name value"
// lines with decimal values.
func parseKFDProperties(s string) (map[string]uint64, error) {
	out := map[string]uint64{}
	for line := range strings.SplitSeq(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, " ")
		if !ok {
			return nil, fmt.Errorf("bad KFD property line %q", line)
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad KFD property line %q", line)
		}
		out[k] = n
	}
	return out, nil
}

// parseVersion reads a version file: "6.10.5" or ROCm's "6.4.1-120".
func parseVersion(s string) (string, error) {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if s == "" || len(s) > 64 || s[0] < '0' || s[0] > '9' || strings.Trim(s, "0123456789.-+~abcdefghijklmnopqrstuvwxyz") != "" {
		return "", fmt.Errorf("%q is not a version", s)
	}
	return s, nil
}

// parseLinkGen reads a PCI current_link_speed / max_link_speed ("32.0 GT/s
// PCIe") as the PCIe generation.
func parseLinkGen(s string) (int, error) {
	num, _, _ := strings.Cut(s, " ")
	gen := map[string]int{"2.5": 1, "5.0": 2, "5": 2, "8.0": 3, "8": 3, "16.0": 4, "16": 4, "32.0": 5, "32": 5, "64.0": 6, "64": 6}[num]
	if gen == 0 || !strings.HasPrefix(strings.TrimPrefix(s, num), " GT/s") {
		return 0, fmt.Errorf("%q is not a PCIe link speed", s)
	}
	return gen, nil
}

// parseLinkWidth reads current_link_width / max_link_width (lanes).
func parseLinkWidth(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 32 {
		return 0, fmt.Errorf("%q is not a PCIe link width", s)
	}
	return n, nil
}
