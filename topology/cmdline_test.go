package topology

import (
	"slices"
	"strings"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	for _, tc := range []struct {
		in                        string
		isolated, flags, nohzFull string // flags comma-joined
	}{
		{"BOOT_IMAGE=/vmlinuz-6.1.0 root=UUID=x ro quiet", "", "", ""},
		{"BOOT_IMAGE=/boot/vmlinuz isolcpus=managed_irq,domain,2-7 nohz_full=2-7", "2-7", "domain,managed_irq", "2-7"},
		{"isolcpus=managed_irq,domain,2-5,8", "2-5,8", "domain,managed_irq", ""},
		{"isolcpus=2-5,8,10", "2-5,8,10", "domain", ""},
		{"isolcpus=nohz,managed_irq,1", "1", "managed_irq,nohz", ""},
		{"isolcpus=1-3 isolcpus=4-5", "4-5", "domain", ""},      // the last one wins
		{"isolcpus=garbage! isolcpus=4-5", "4-5", "domain", ""}, // even over garbage
		{"nohz_full=1 nohz_full=2-3,6", "", "", "2-3,6"},
		{"nohz-full=5", "", "", "5"},                               // '-' and '_' are the same in names
		{`isolcpus="1-2" nohz_full="1-2"`, "1-2", "domain", "1-2"}, // quoted values
		{`dyndbg="file x.c +p" isolcpus=3`, "3", "domain", ""},     // quotes protect spaces
		{"quiet -- isolcpus=3 nohz_full=3", "", "", ""},            // after -- it is init's
		{"\tisolcpus=3\n", "3", "domain", ""},
		{"isolcpus= nohz_full=", "", "", ""},         // empty lists
		{"isolcpus=domain,managed_irq,", "", "", ""}, // flags alone isolate nothing
		{"isolcpus nohz_full", "", "", ""},           // no "=": not these parameters
		{"isolcpus=0-15:2/4", "0-1,4-5,8-9,12-13", "domain", ""},
		{"myisolcpus=3 isolcpusx=4", "", "", ""},
	} {
		got, err := parseCmdline(tc.in)
		if err != nil {
			t.Errorf("parseCmdline(%q): %v", tc.in, err)
			continue
		}
		if got.Isolated.String() != tc.isolated || strings.Join(got.IsolatedFlags, ",") != tc.flags || got.NohzFull.String() != tc.nohzFull {
			t.Errorf("parseCmdline(%q) = isolated %q flags %q nohz_full %q; want %q %q %q", tc.in,
				got.Isolated, strings.Join(got.IsolatedFlags, ","), got.NohzFull, tc.isolated, tc.flags, tc.nohzFull)
		}
	}
}

func TestParseCmdlineGarbage(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want: a piece of the error
	}{
		{"isolcpus=2-x", "isolcpus"},
		{"isolcpus=managed_irq,2,", "isolcpus"}, // trailing comma: empty element
		{"isolcpus=2-5,nohz", "isolcpus"},       // flags go first
		{"isolcpus=dom@in,2", "invalid flag"},
		{"isolcpus=1-3 isolcpus=x", "isolcpus"}, // the last one is garbage
		{"nohz_full=7-3", "nohz_full"},
		{"nohz_full=99999", "nohz_full"},
		{"nohz_full=N", "nohz_full"}, // "N" (last CPU) needs nr_cpu_ids, which the command line does not hold
		{"isolcpus=\xff\xfe", "isolcpus"},
	} {
		got, err := parseCmdline(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseCmdline(%q) = %+v, %v; want an error about %q", tc.in, got, err, tc.want)
		}
	}
	// An unknown flag is reported, but the kernel still isolates the CPUs.
	got, err := parseCmdline("isolcpus=domian,managed_irq,3")
	if err == nil || !strings.Contains(err.Error(), "domian") || got.Isolated.String() != "3" || !slices.Equal(got.IsolatedFlags, []string{"managed_irq"}) {
		t.Errorf("parseCmdline with an unknown flag = %+v, %v", got, err)
	}
	// One bad parameter does not hide the other.
	got, err = parseCmdline("isolcpus=x nohz_full=2-3")
	if err == nil || got.NohzFull.String() != "2-3" || !got.Isolated.IsEmpty() {
		t.Errorf("parseCmdline with bad isolcpus = %+v, %v", got, err)
	}
}

func TestSplitCmdline(t *testing.T) {
	got := splitCmdline(` a=1  b="x y" "c=2" d= e f="unterminated g=3 -- h=4`)
	want := []cmdlineParam{
		{"a", "1", true}, {"b", "x y", true}, {"c", "2", true}, {"d", "", true}, {"e", "", false},
		{"f", "unterminated g=3 -- h=4", true},
	}
	if !slices.Equal(got, want) {
		t.Errorf("splitCmdline = %+v; want %+v", got, want)
	}
}
