package topology

import (
	"strings"
	"testing"
)

// aer_dev_fatal as kernel 6.x writes it (the error names of
// drivers/pci/pcie/aer.c's aer_uncorrectable_error_string; the same rows
// SONiC's `pcieutil pcie-aer` prints, sonic-net/sonic-utilities#1169).
const aerFatal = `Undefined 0
DLP 0
SDES 0
TLP 0
FCP 0
CmpltTO 0
CmpltAbrt 0
UnxCmplt 0
RxOF 0
MalfTLP 1
ECRC 0
UnsupReq 0
ACSViol 0
UncorrIntErr 0
BlockedTLP 0
AtomicOpBlocked 0
TLPBlockedErr 0
PoisonTLPBlocked 0
TOTAL_ERR_FATAL 1
`

const aerCorrectable = `RxErr 3
BadTLP 1
BadDLLP 0
Rollover 0
Timeout 0
NonFatalErr 0
CorrIntErr 0
HeaderOF 0
TOTAL_ERR_COR 4
`

func TestParseAER(t *testing.T) {
	for _, c := range []struct {
		in, total string
		want      uint64
		bad       bool
	}{
		{aerFatal, "TOTAL_ERR_FATAL", 1, false},
		{aerCorrectable, "TOTAL_ERR_COR", 4, false},
		// Without the total line (a kernel that renamed it): the sum.
		{strings.ReplaceAll(aerCorrectable, "TOTAL_ERR_COR 4\n", ""), "TOTAL_ERR_COR", 4, false},
		{"", "TOTAL_ERR_FATAL", 0, false},
		{"MalfTLP one\n", "TOTAL_ERR_FATAL", 0, true},
		{"MalfTLP\n", "TOTAL_ERR_FATAL", 0, true},
		{"MalfTLP -1\n", "TOTAL_ERR_FATAL", 0, true},
	} {
		got, err := ParseAER(c.in, c.total)
		if c.bad != (err != nil) || got != c.want {
			t.Errorf("ParseAER(%q) = %d, %v", c.in, got, err)
		}
	}
}

func TestDowntrained(t *testing.T) {
	for _, c := range []struct {
		l          *PCIeLink
		speed, out bool
	}{
		{nil, true, false},
		{&PCIeLink{CurrentGen: 5, CurrentWidth: 16, MaxGen: 5, MaxWidth: 16}, true, false},
		{&PCIeLink{CurrentGen: 4, CurrentWidth: 8, MaxGen: 5, MaxWidth: 16}, false, true},
		{&PCIeLink{CurrentGen: 1, CurrentWidth: 16, MaxGen: 5, MaxWidth: 16}, false, false}, // an idle GPU
		{&PCIeLink{CurrentGen: 1, CurrentWidth: 16, MaxGen: 5, MaxWidth: 16}, true, true},   // a NIC
		{&PCIeLink{CurrentGen: 0, CurrentWidth: 0, MaxGen: 5, MaxWidth: 16}, true, false},   // down
	} {
		if got := c.l.Downtrained(c.speed); got != c.out {
			t.Errorf("%+v speed=%v: %v", c.l, c.speed, got)
		}
	}
}

func FuzzParseAER(f *testing.F) {
	f.Add(aerFatal)
	f.Add(aerCorrectable)
	f.Add("TOTAL_ERR_FATAL 18446744073709551616\n")
	f.Add("\x00 \n \n  TOTAL_ERR_FATAL  2")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseAER(s, "TOTAL_ERR_FATAL")
		if err != nil && n != 0 {
			t.Fatalf("error %v with a count %d", err, n)
		}
	})
}
