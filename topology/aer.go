package topology

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"

	"github.com/gpunode/gpunode/internal/hostfs"
)

// AERCounts are a PCIe device's Advanced Error Reporting counters since
// boot: the TOTAL_ERR_COR, TOTAL_ERR_NONFATAL and TOTAL_ERR_FATAL lines of
// sysfs aer_dev_correctable, aer_dev_nonfatal and aer_dev_fatal (kernel
// 4.19 and later, with AER enabled on the device).
type AERCounts struct {
	Correctable, NonFatal, Fatal uint64
}

// PCIeEndpoint is a device whose PCIe health is read: a GPU or a NIC.
type PCIeEndpoint struct {
	Address string // "0000:1b:00.0"
	Role    string // "gpu", "nic"
}

// RoleUpstream is the role of a bridge above an endpoint (its switch ports
// and root port).
const RoleUpstream = "upstream"

// PCIeHealth is one device's AER counters and link at one reading.
type PCIeHealth struct {
	Address string
	Role    string
	// Below are the endpoints under an upstream port, sorted; empty for
	// an endpoint.
	Below []string
	// AER is nil when the device has no AER statistics.
	AER *AERCounts
	// Link is nil when the device has no PCIe link attributes.
	Link *PCIeLink
}

// ReadPCIeHealth reads the AER counters and the link of each endpoint and
// of every bridge above it up to its root port, each device once, in the
// order met. What cannot be read is in errs; the rest is still reported.
func ReadPCIeHealth(fsys hostfs.FS, endpoints []PCIeEndpoint) (out []PCIeHealth, errs []error) {
	index := map[string]int{}
	add := func(addr, role, below string) {
		i, ok := index[addr]
		if !ok {
			h, err := readPCIeHealth(fsys, addr, role)
			errs = append(errs, err...)
			out = append(out, h)
			i = len(out) - 1
			index[addr] = i
		}
		if below != "" && !slices.Contains(out[i].Below, below) {
			out[i].Below = append(out[i].Below, below)
			slices.Sort(out[i].Below)
		}
	}
	for _, e := range endpoints {
		add(e.Address, e.Role, "")
		base := "/sys/bus/pci/devices/" + e.Address
		resolved, err := fsys.Resolve(base)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", base, err))
			continue
		}
		path, err := parsePCIPath(resolved, e.Address)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// Path: host bridge, root port, switch ports..., the device.
		for i := len(path) - 2; i >= 1; i-- {
			if isBDF(path[i]) {
				add(path[i], RoleUpstream, e.Address)
			}
		}
	}
	return out, errs
}

func readPCIeHealth(fsys hostfs.FS, addr, role string) (PCIeHealth, []error) {
	h := PCIeHealth{Address: addr, Role: role}
	base := "/sys/bus/pci/devices/" + addr
	var errs []error
	var c AERCounts
	found := false
	for _, f := range []struct {
		file, total string
		p           *uint64
	}{
		{"aer_dev_correctable", "TOTAL_ERR_COR", &c.Correctable},
		{"aer_dev_nonfatal", "TOTAL_ERR_NONFATAL", &c.NonFatal},
		{"aer_dev_fatal", "TOTAL_ERR_FATAL", &c.Fatal},
	} {
		b, err := fsys.ReadFile(base + "/" + f.file)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n, err := ParseAER(string(b), f.total)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s/%s: %w", base, f.file, err))
			continue
		}
		*f.p, found = n, true
	}
	if found {
		h.AER = &c
	}
	d := &discovery{fsys: fsys}
	h.Link = d.pcieLink(base, func(err error) { errs = append(errs, err) })
	return h, errs
}

// ParseAER reads an aer_dev_* file: one "<ErrorName> <count>" line per
// error type and a total line (TOTAL_ERR_COR, TOTAL_ERR_NONFATAL,
// TOTAL_ERR_FATAL). The total is taken when present, else the sum of the
// lines (a kernel that renamed it still counts). A line that is not
// "<name> <decimal>" is an error.
func ParseAER(s, total string) (uint64, error) {
	var sum uint64
	for line := range strings.Lines(s) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			return 0, fmt.Errorf("AER line %q: want \"<name> <count>\"", truncate(line, 60))
		}
		n, err := strconv.ParseUint(strings.TrimSpace(val), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("AER line %q: want \"<name> <count>\"", truncate(line, 60))
		}
		if name == total {
			return n, nil
		}
		if strings.HasPrefix(name, "TOTAL_") {
			continue
		}
		sum += n
	}
	return sum, nil
}

// Downtrained says whether a link runs below what it trained at before
// (or can): narrower than its maximum width, or, when checkSpeed, slower
// than its maximum speed. GPUs lower their link speed when idle to save
// power (an H100 idles at 2.5 GT/s), so their speed is not checked; their
// width does not change with load.
func (l *PCIeLink) Downtrained(checkSpeed bool) bool {
	if l == nil || l.CurrentWidth == 0 && l.CurrentGen == 0 {
		return false // a link that is down or unknown is not "trained below"
	}
	return l.MaxWidth > 0 && l.CurrentWidth < l.MaxWidth || checkSpeed && l.MaxGen > 0 && l.CurrentGen > 0 && l.CurrentGen < l.MaxGen
}
