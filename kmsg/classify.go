package kmsg

import (
	"regexp"
	"strconv"
	"strings"
)

// Kind is what a finding reports.
type Kind string

const (
	// XID is an NVIDIA GPU Xid ("NVRM: Xid (PCI:0000:44:00): 79, ...").
	XID Kind = "xid"
	// SXID is an NVSwitch SXid ("nvidia-nvswitch3: SXid (PCI:...): 12028, ...").
	SXID Kind = "sxid"
	// FellOffBus is "NVRM: GPU at ... has fallen off the bus" (or the
	// open module's multi-line form), with or without an Xid 79 beside it.
	FellOffBus Kind = "fell_off_bus"
	// MLX5Health is an mlx5 firmware health report: a syndrome, a fatal
	// error, or the health counter stopping.
	MLX5Health Kind = "mlx5_health"
	// AER is a PCIe Advanced Error Reporting error logged for a device.
	AER Kind = "aer"
	// AMDGPURAS is an amdgpu RAS (ECC) error count for an IP block.
	AMDGPURAS Kind = "amdgpu_ras"
)

// AER severities, as the kernel names them in "severity=".
const (
	SeverityCorrected = "corrected"
	SeverityNonFatal  = "nonfatal"
	SeverityFatal     = "fatal"
)

// Finding is one record that reports a device fault.
type Finding struct {
	Kind Kind
	// Device is the PCI address of the device, in sysfs form
	// ("0000:44:00.0"); empty when the record names none.
	Device string
	// Code is the Xid or SXid number, the mlx5 syndrome, or the number of
	// errors an amdgpu RAS record reports; 0 when there is none.
	Code uint64
	// Severity is the AER severity, or for amdgpu RAS "corrected" or
	// "fatal" (uncorrectable); empty otherwise.
	Severity string
	// Detail is a short description (the mlx5 message, the RAS block).
	Detail string
}

var (
	pciAddr = `([0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}(?:\.[0-7])?)`
	// The proprietary and open modules both write "NVRM: Xid (PCI:%s): %d, ...",
	// with the bus id without the function.
	reXID  = regexp.MustCompile(`NVRM: Xid \(PCI:` + pciAddr + `\): (\d+)`)
	reSXID = regexp.MustCompile(`SXid \(PCI:` + pciAddr + `\): (\d+)`)
	// "NVRM: GPU at PCI:0000:01:00: GPU-..." / "NVRM: GPU at 0000:01:00.0 has
	// fallen off the bus." (older drivers) and "NVRM: The NVIDIA GPU
	// 0000:b3:00.0 ... has ... fallen off the bus" (newer, several lines in
	// one record).
	reFell = regexp.MustCompile(`(?s)NVRM: (?:GPU at (?:PCI:)?|The NVIDIA GPU )` + pciAddr + `.*fallen off the bus`)
	// dev_printk prefix: "<driver> <device>: ".
	reDevPrefix = regexp.MustCompile(`^(\S+) ` + pciAddr + `: `)
	reDevice    = regexp.MustCompile(`^` + pciAddr + `$`)
	// mlx5 health.c logs one fault as a dump of many lines; only the
	// line that names it counts: "Health issue observed, <syndrome>,
	// severity(N) ..." (5.19 and later), "synd 0x1: <syndrome>" (before;
	// not ext_synd), the health counter stopping, or a fatal sensor.
	reMLX5Issue = regexp.MustCompile(`Health issue observed, (.*?), severity`)
	reMLX5Synd  = regexp.MustCompile(`\bsynd 0x([0-9a-fA-F]+): (.*)`)
	reMLX5Miss  = regexp.MustCompile(`device's health compromised`)
	reMLX5Fatal = regexp.MustCompile(`[Ff]atal error (\d+) detected`)
	// nvidia-nvswitch logs an SXid as several lines with the same code
	// (Data {...}, Severity ..., and the one that says Fatal/Non-fatal);
	// the last is the one that counts.
	reSXIDSev = regexp.MustCompile(`^, (Non-fatal|Fatal),`)
	reAER     = regexp.MustCompile(`PCIe Bus Error: severity=(Corrected|Uncorrected \(Non-Fatal\)|Uncorrectable \(Non-Fatal\)|Uncorrected \(Fatal\)|Uncorrectable \(Fatal\))`)
	reAERRecv = regexp.MustCompile(`AER: (?:Multiple )?(Corrected|Uncorrected \(Non-Fatal\)|Uncorrectable \(Non-Fatal\)|Uncorrected \(Fatal\)|Uncorrectable \(Fatal\)) error (?:message )?received:? (?:from )?` + pciAddr)
	reRAS     = regexp.MustCompile(`(\d+) (uncorrectable|correctable) hardware errors detected in (?:total in )?(\S+) block`)
)

// Classify says whether a record reports a device fault. A record it does
// not know is not a finding; there is no error case.
//
// AER: the kernel logs one "AER: ... error received: <source>" line at the
// root port and then a "PCIe Bus Error: severity=..." line for each device
// it logs the error for; the second names the device with the error (even
// when the first names it only as "id=00e8", as kernels before 4.18 do),
// so it is the one that counts. The first is recognised (ReceivedAER) but
// is not a finding of its own.
func Classify(r Record) (Finding, bool) {
	t := r.Text
	if m := reXID.FindStringSubmatch(t); m != nil {
		return Finding{Kind: XID, Device: busID(m[1]), Code: parseUint(m[2], 10)}, true
	}
	if loc := reSXID.FindStringSubmatchIndex(t); loc != nil {
		sev := reSXIDSev.FindStringSubmatch(t[loc[1]:])
		if sev == nil {
			return Finding{}, false // a Data or Severity line of an SXid already counted
		}
		f := Finding{Kind: SXID, Device: busID(t[loc[2]:loc[3]]), Code: parseUint(t[loc[4]:loc[5]], 10), Severity: SeverityNonFatal}
		if sev[1] == "Fatal" {
			f.Severity = SeverityFatal
		}
		return f, true
	}
	if m := reFell.FindStringSubmatch(t); m != nil {
		return Finding{Kind: FellOffBus, Device: busID(m[1])}, true
	}
	dev := recordDevice(r)
	if m := reAER.FindStringSubmatch(t); m != nil {
		return Finding{Kind: AER, Device: dev, Severity: severity(m[1])}, true
	}
	if strings.HasPrefix(t, "mlx5_core") || strings.HasPrefix(r.Dict["DRIVER"], "mlx5") {
		f := Finding{Kind: MLX5Health, Device: dev}
		switch {
		case reMLX5Issue.MatchString(t):
			f.Detail = reMLX5Issue.FindStringSubmatch(t)[1]
		case reMLX5Synd.MatchString(t):
			m := reMLX5Synd.FindStringSubmatch(t)
			f.Code, f.Detail = parseUint(m[1], 16), strings.TrimSpace(m[2])
		case reMLX5Miss.MatchString(t):
			f.Detail = "health counter stopped (device's health compromised)"
		case reMLX5Fatal.MatchString(t):
			f.Code, f.Detail = parseUint(reMLX5Fatal.FindStringSubmatch(t)[1], 10), "fatal error"
		default:
			return Finding{}, false
		}
		return f, true
	}
	if strings.HasPrefix(t, "amdgpu") {
		if m := reRAS.FindStringSubmatch(t); m != nil {
			sev := SeverityCorrected
			if m[2] == "uncorrectable" {
				sev = SeverityFatal
			}
			return Finding{Kind: AMDGPURAS, Device: dev, Code: parseUint(m[1], 10), Severity: sev, Detail: m[3]}, true
		}
	}
	return Finding{}, false
}

// ReceivedAER parses the root port's "AER: ... error received: <device>"
// line: the device named as the source and the severity.
func ReceivedAER(r Record) (device, sev string, ok bool) {
	m := reAERRecv.FindStringSubmatch(r.Text)
	if m == nil {
		return "", "", false
	}
	return busID(m[2]), severity(m[1]), true
}

func severity(s string) string {
	switch {
	case strings.Contains(s, "Non-Fatal"):
		return SeverityNonFatal
	case strings.Contains(s, "Fatal"):
		return SeverityFatal
	}
	return SeverityCorrected
}

// recordDevice is the PCI device a dev_printk record is about: the
// DEVICE=+pci:<addr> continuation line, else the "<driver> <addr>: " prefix.
func recordDevice(r Record) string {
	if d, ok := strings.CutPrefix(r.Dict["DEVICE"], "+pci:"); ok && reDevice.MatchString(d) {
		return busID(d)
	}
	if m := reDevPrefix.FindStringSubmatch(r.Text); m != nil {
		return busID(m[2])
	}
	return ""
}

// busID is an address in sysfs form: lower case, a 4-digit domain, and
// function 0 when the driver left it out (NVRM's "0000:44:00").
func busID(s string) string {
	s = strings.ToLower(s)
	dom, rest, _ := strings.Cut(s, ":")
	dom = strings.TrimLeft(dom, "0")
	for len(dom) < 4 {
		dom = "0" + dom
	}
	if !strings.Contains(rest, ".") {
		rest += ".0"
	}
	return dom + ":" + rest
}

func parseUint(s string, base int) uint64 {
	n, err := strconv.ParseUint(s, base, 64)
	if err != nil {
		return 0 // more digits than fit: the regexp matched, the number is nonsense
	}
	return n
}
