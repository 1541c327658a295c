package topology

import (
	"fmt"
	"maps"
	"strings"
	"testing"
)

// x86 /proc/interrupts as a 4-CPU host with a ConnectX and a GPU shows it.
const interruptsX86 = `            CPU0       CPU1       CPU2       CPU3       
   0:         46          0          0          0   IO-APIC   2-edge      timer
   8:          0          0          0          0   IO-APIC   8-edge      rtc0
   9:          0          4          0          0   IO-APIC   9-fasteoi   acpi
  16:          0          0          0          0   IO-APIC  16-fasteoi   i801_smbus, ehci_hcd:usb1
  24:          0          0          0          0  HPET_MSI   2-edge      hpet2
  25:          0          0          0          0      DMAR   0         
 100:         10          0          0          0  IR-PCI-MSIX-0000:18:00.0    0-edge      mlx5_async0@pci:0000:18:00.0
 101:          0         20          0          0  IR-PCI-MSIX-0000:18:00.0    1-edge      mlx5_comp0@pci:0000:18:00.0
 150:          0          0          5          0  IR-PCI-MSI-0000:1b:00.0    0-edge      nvidia
 160:          0          0          0          0  IR-PCI-MSIX-0000:1c:00.0    0-edge     
 NMI:          0          0          0          0   Non-maskable interrupts
 LOC:     123456     654321         12         34   Local timer interrupts
 SPU:          0          0          0          0   Spurious interrupts
 ERR:          0
 MIS:          0
 PIN:          0          0          0          0   Posted-interrupt notification event
`

// arm64 (GICv3) shows the hardware IRQ and the trigger as separate words.
const interruptsARM = `           CPU0       CPU1       
 11:       1234       5678     GICv3  27 Level     arch_timer
 13:          0          0     GICv3  26 Level     kvm guest ptimer
 45:          1          0   ITS-MSI 524288 Edge      nvme0q0
 46:          0          0   ITS-MSI 33030144 Edge      mlx5_comp0@pci:0000:01:00.0
IPI0:        10         20       Rescheduling interrupts
IPI1:         1          2       Function call interrupts
Err:          0
`

// Kernels before 4.x fused the trigger type into the chip name.
const interruptsOld = `           CPU0       CPU1       
  0:        135          0   IO-APIC-edge      timer
 58:       3043          0   IR-PCI-MSI-edge      eth0-TxRx-0
`

func TestParseInterrupts(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     map[int]string
	}{
		{"x86", interruptsX86, map[int]string{
			0: "timer", 8: "rtc0", 9: "acpi", 16: "i801_smbus, ehci_hcd:usb1", 24: "hpet2", 25: "",
			100: "mlx5_async0@pci:0000:18:00.0", 101: "mlx5_comp0@pci:0000:18:00.0", 150: "nvidia", 160: "",
		}},
		{"arm64", interruptsARM, map[int]string{
			11: "arch_timer", 13: "kvm guest ptimer", 45: "nvme0q0", 46: "mlx5_comp0@pci:0000:01:00.0",
		}},
		{"old x86", interruptsOld, map[int]string{0: "timer", 58: "eth0-TxRx-0"}},
		// CPUs 1 and 2 offline: the header has gaps.
		{"offline CPUs", "  CPU0 CPU3\n 5: 1 2 PCI-MSI 0-edge x\n", map[int]string{5: "x"}},
		// Fewer counts than CPUs, and a line with counts only.
		{"short lines", "CPU0 CPU1 CPU2\n 7: 1 PCI-MSI 3-edge y\n 8: 1 2 3\n 9: 1 2 3 chip\n", map[int]string{7: "y", 8: "", 9: ""}},
		{"CRLF", "CPU0\r\n 7: 1 chip 0-edge name\r\n", map[int]string{7: "name"}},
		{"header only", "CPU0 CPU1\n", map[int]string{}},
	} {
		got, err := parseInterrupts(strings.NewReader(tc.in))
		if err != nil || !maps.Equal(got, tc.want) {
			t.Errorf("%s: parseInterrupts = %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
}

func TestParseInterruptsGarbage(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		good     map[int]string // what is still returned
	}{
		{"empty", "", nil},
		{"no header", " 0: 1 2 IO-APIC 2-edge timer\n", nil},
		{"bad header", "CPU0 CPUx\n", nil},
		{"blank header", "   \n 0: 1 x 0-edge y\n", nil},
		{"NUL in a line", "CPU0\n 1: 1 c 0-edge a\n 2: 1 c 0-edge b\x00\n", map[int]string{1: "a"}},
		{"not UTF-8", "CPU0\n 1: 1 c 0-edge a\n 2: 1 c 0-edge \xff\xfe\n", map[int]string{1: "a"}},
		{"no colon", "CPU0\n 1: 1 c 0-edge a\ngarbage\n", map[int]string{1: "a"}},
		{"bad label", "CPU0\n 1: 1 c 0-edge a\n a b: 1\n", map[int]string{1: "a"}},
		{"huge number", "CPU0\n 1: 1 c 0-edge a\n 99999999999999999999: 1 c 0-edge b\n", map[int]string{1: "a"}},
		{"empty label", "CPU0\n: 1 c 0-edge b\n", map[int]string{}},
		{"line too long", "CPU0\n 1: 1 c 0-edge a\n 2: " + strings.Repeat("1 ", maxInterruptsLine) + "\n 3: 1 c 0-edge b\n", map[int]string{1: "a"}},
	} {
		got, err := parseInterrupts(strings.NewReader(tc.in))
		if err == nil {
			t.Errorf("%s: parseInterrupts = %v; want an error", tc.name, got)
		}
		if !maps.Equal(got, tc.good) {
			t.Errorf("%s: parseInterrupts kept %v; want %v", tc.name, got, tc.good)
		}
	}
}

// TestParseInterruptsLarge parses a DGX-sized file (224 CPUs, 4000 lines,
// about 10 MB: over hostfs.MaxFileSize, which is why it is streamed) and
// checks the parser stays cheap: a handful of allocations per line.
func TestParseInterruptsLarge(t *testing.T) {
	const ncpu, nirq = 224, 4000
	in := syntheticInterrupts(ncpu, nirq)
	if len(in) < 8<<20 {
		t.Fatalf("synthetic file is %d bytes; want it over 8 MiB", len(in))
	}
	got, err := parseInterrupts(strings.NewReader(in))
	if err != nil || len(got) != nirq || got[1234] != "mlx5_comp1234@pci:0000:18:00.0" {
		t.Fatalf("parseInterrupts = %d lines, %v; [1234] = %q", len(got), err, got[1234])
	}
	allocs := testing.AllocsPerRun(1, func() { _, _ = parseInterrupts(strings.NewReader(in)) })
	if allocs > 3*nirq {
		t.Errorf("parseInterrupts made %.0f allocations for %d lines; want it linear and light", allocs, nirq)
	}
}

func BenchmarkParseInterrupts(b *testing.B) {
	in := syntheticInterrupts(224, 1000)
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := parseInterrupts(strings.NewReader(in)); err != nil {
			b.Fatal(err)
		}
	}
}

func syntheticInterrupts(ncpu, nirq int) string {
	var sb strings.Builder
	sb.WriteString("      ")
	for c := range ncpu {
		fmt.Fprintf(&sb, "CPU%-8d", c)
	}
	sb.WriteByte('\n')
	for i := range nirq {
		fmt.Fprintf(&sb, "%4d:", i)
		for c := range ncpu {
			fmt.Fprintf(&sb, " %10d", (i*c)%1000)
		}
		fmt.Fprintf(&sb, "  IR-PCI-MSIX-0000:18:00.0 %4d-edge      mlx5_comp%d@pci:0000:18:00.0\n", i, i)
	}
	sb.WriteString(" NMI:")
	for range ncpu {
		sb.WriteString("          0")
	}
	sb.WriteString("   Non-maskable interrupts\n")
	return sb.String()
}
