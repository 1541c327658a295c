package kmsg

import (
	"fmt"
	"strings"
	"testing"
)

// Kernel log lines captured on real machines, as bug reports and pull
// requests quote them (the "[  ts]" or "kernel:" prefix of dmesg/journalctl
// removed; it is not part of the record's text). They are facts the
// kernel printed, quoted for the parser's tests.
var realLines = []struct {
	source string
	text   string
	dict   map[string]string
	want   *Finding
}{
	{source: "NVIDIA/NVSentinel#155 (comment)",
		text: "NVRM: Xid (PCI:0000:44:00): 79, GPU has fallen off the bus",
		want: &Finding{Kind: XID, Device: "0000:44:00.0", Code: 79}},
	{source: "NVIDIA/open-gpu-kernel-modules#1150",
		text: "NVRM: Xid (PCI:0000:dc:00): 45, pid=1818990, name=python3, Ch 00000001 caused by previous Xid 149",
		want: &Finding{Kind: XID, Device: "0000:dc:00.0", Code: 45}},
	{source: "leptonai/gpud#1174 (a Grace system's domain 0019)",
		text: "NVRM: Xid (PCI:0019:01:00): 149, NETIR Fatal XC0 i0 Link -1 (0x000fe406 0x00000000 0x00000000 0x00000000 0x00000000 0x00000000)",
		want: &Finding{Kind: XID, Device: "0019:01:00.0", Code: 149}},
	{source: "NVIDIA/NVSentinel#155 (one printk of three lines; /dev/kmsg escapes the newlines)",
		text: "NVRM: The NVIDIA GPU 0000:b3:00.0\n               NVRM: (PCI ID: 10de:26b5) installed in this system has\n               NVRM: fallen off the bus and is not responding to commands.",
		want: &Finding{Kind: FellOffBus, Device: "0000:b3:00.0"}},
	{source: "Bumblebee-Project/Bumblebee#554",
		text: "NVRM: GPU at 0000:01:00.0 has fallen off the bus.",
		want: &Finding{Kind: FellOffBus, Device: "0000:01:00.0"}},
	{source: "NVIDIA/nvtrust#124",
		text: "nvidia-nvswitch3: SXid (PCI:0000:04:00.0): 22013, Non-fatal, Link 44 Minion Link DLREQ interrupt",
		want: &Finding{Kind: SXID, Device: "0000:04:00.0", Code: 22013, Severity: SeverityNonFatal}},
	{source: "NVIDIA/nvtrust#124 (the same SXid's data line: not counted again)",
		text: "nvidia-nvswitch3: SXid (PCI:0000:04:00.0): 22013, Data {0x0000002b, 0x0000002b, 0x00000000, 0x0000002b, 0x80005302, 0x00000000, 0x00000000, 0x00000000, 0x00000000}"},
	{source: "NVIDIA/nvtrust#124 (severity line: not counted again)",
		text: "nvidia-nvswitch3: SXid (PCI:0000:04:00.0): 22013, Severity 0 Engine instance 44 Sub-engine instance 00"},
	{source: "linux-rdma / virtualization list, mlx5_vdpa crash report (kernel 6.x)",
		text: "mlx5_core 0000:0d:00.0: poll_health:801:(pid 0): device's health compromised - reached miss count",
		want: &Finding{Kind: MLX5Health, Device: "0000:0d:00.0", Detail: "health counter stopped (device's health compromised)"}},
	{source: "linux-rdma / virtualization list, mlx5_vdpa crash report (kernel 6.x)",
		text: "mlx5_core 0000:0d:00.0: print_health_info:431:(pid 0): Health issue observed, firmware internal error, severity(3) ERROR:",
		want: &Finding{Kind: MLX5Health, Device: "0000:0d:00.0", Detail: "firmware internal error"}},
	{source: "linux-rdma / virtualization list, mlx5_vdpa crash report (the dump after it: not counted)",
		text: "mlx5_core 0000:0d:00.0: print_health_info:435:(pid 0): assert_var[0] 0x0521945b"},
	{source: "a ConnectX-8 bring-up report (ext_synd is not the syndrome line)",
		text: "mlx5_core 0000:73:00.0: ext_synd 0x035e"},
	{source: "leptonai/gpud#1209 (a harmless port event)",
		text: "mlx5_core 0000:ab:00.0 mlx5_5: Port: 1 Link ACTIVE"},
	{source: "PeterSuh-Q3/tinycore-redpill#9 (probe failure: not a health syndrome)",
		text: "mlx5_core 0000:03:00.0: handle_hca_cap failed"},
	{source: "geerlingguy/raspberry-pi-pcie-devices#116",
		text: "pcieport 0000:00:00.0: PCIe Bus Error: severity=Uncorrected (Non-Fatal), type=Transaction Layer, (Requester ID)",
		want: &Finding{Kind: AER, Device: "0000:00:00.0", Severity: SeverityNonFatal}},
	{source: "geerlingguy/raspberry-pi-pcie-devices#116 (the root port's summary: not counted)",
		text: "pcieport 0000:00:00.0: AER: Uncorrected (Non-Fatal) error received: 0000:00:00.0"},
	{source: "endlessm/linux#548 (the device's own driver logs it, after \"AER: \")",
		text: "alx 0000:07:00.0: AER: PCIe Bus Error: severity=Corrected, type=Data Link Layer, (Receiver ID)",
		want: &Finding{Kind: AER, Device: "0000:07:00.0", Severity: SeverityCorrected}},
	{source: "archfan/coreboot#2",
		text: "pcieport 0000:00:1c.1: PCIe Bus Error: severity=Corrected, type=Data Link Layer, (Transmitter ID)",
		want: &Finding{Kind: AER, Device: "0000:00:1c.1", Severity: SeverityCorrected}},
	{source: "minisforum-docs/MS-02-Ultra#10",
		text: "pcieport 0000:80:1b.4: PCIe Bus Error: severity=Uncorrectable (Non-Fatal), type=Transaction Layer, (Receiver ID)",
		want: &Finding{Kind: AER, Device: "0000:80:1b.4", Severity: SeverityNonFatal}},
	{source: "ilya-zlobintsev/LACT#1180 (amdgpu init: harmless)",
		text: "amdgpu 0000:12:00.0: amdgpu: detected ip block number 6 <gfx_v10_0>"},
	{source: "ROCm/legacy-rocm-build#2927 (APEI summary: not a device report)",
		text: "{359}[Hardware Error]: Hardware error from APEI Generic Hardware Error Source: 512"},
	{source: "the sim and VM tests' userspace line: no dev_printk prefix, the device in DEVICE=",
		text: "PCIe Bus Error: severity=Uncorrected (Fatal), type=Transaction Layer, (Requester ID)",
		dict: map[string]string{"SUBSYSTEM": "pci", "DEVICE": "+pci:0000:1A:00.0"},
		want: &Finding{Kind: AER, Device: "0000:1a:00.0", Severity: SeverityFatal}},
}

// amdgpu_ras.c's format ("%ld uncorrectable hardware errors detected in
// %s block"), with the dev_printk prefix amdgpu adds; no captured line
// from an MI300X report was found.
func TestClassifyAMDGPURAS(t *testing.T) {
	got, ok := Classify(Record{Text: "amdgpu 0000:05:00.0: amdgpu: 2 uncorrectable hardware errors detected in umc block"})
	want := Finding{Kind: AMDGPURAS, Device: "0000:05:00.0", Code: 2, Severity: SeverityFatal, Detail: "umc"}
	if !ok || got != want {
		t.Errorf("got %+v %v, want %+v", got, ok, want)
	}
	got, ok = Classify(Record{Text: "amdgpu 0000:05:00.0: amdgpu: 7 correctable hardware errors detected in total in gfx block"})
	if !ok || got.Severity != SeverityCorrected || got.Code != 7 || got.Detail != "gfx" {
		t.Errorf("correctable: got %+v %v", got, ok)
	}
}

func TestClassifyRealLines(t *testing.T) {
	for _, c := range realLines {
		got, ok := Classify(Record{Text: c.text, Dict: c.dict})
		switch {
		case c.want == nil && ok:
			t.Errorf("%s: %q is not a finding, got %+v", c.source, c.text, got)
		case c.want != nil && (!ok || got != *c.want):
			t.Errorf("%s: %q\n got %+v %v\nwant %+v", c.source, c.text, got, ok, *c.want)
		}
	}
}

func TestReceivedAER(t *testing.T) {
	for _, c := range []struct{ text, dev, sev string }{
		{"pcieport 0000:00:00.0: AER: Uncorrected (Non-Fatal) error received: 0000:00:00.0", "0000:00:00.0", SeverityNonFatal},
		{"pcieport 0000:80:1b.4: AER: Uncorrectable (Non-Fatal) error message received from 0000:80:1b.4", "0000:80:1b.4", SeverityNonFatal},
		{"pcieport 0000:00:1d.0: AER: Corrected error received: 0000:07:00.0", "0000:07:00.0", SeverityCorrected},
		{"pcieport 0000:00:1c.1: AER: Multiple Corrected error received: 0000:00:1c.1", "0000:00:1c.1", SeverityCorrected},
	} {
		dev, sev, ok := ReceivedAER(Record{Text: c.text})
		if !ok || dev != c.dev || sev != c.sev {
			t.Errorf("%q: got %q %q %v", c.text, dev, sev, ok)
		}
	}
	if _, _, ok := ReceivedAER(Record{Text: "pcieport 0000:00:1c.5: AER: Corrected error received: id=00e5"}); ok {
		t.Error("an id= source (kernels before 4.18) names no device")
	}
}

func TestParseRecord(t *testing.T) {
	// As /dev/kmsg hands it out: the multi-line printk's newlines escaped,
	// and dev_printk's continuation lines.
	raw := "3,1342,1843308145,-,caller=T812;NVRM: The NVIDIA GPU 0000:b3:00.0\\x0a NVRM: fallen off the bus and \\x5c not responding.\n" +
		" SUBSYSTEM=pci\n DEVICE=+pci:0000:b3:00.0\n"
	r, err := ParseRecord([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if r.Priority != 3 || r.Level() != 3 || r.Seq != 1342 || r.Since.Microseconds() != 1843308145 {
		t.Errorf("header: %+v", r)
	}
	if r.Text != "NVRM: The NVIDIA GPU 0000:b3:00.0\n NVRM: fallen off the bus and \\ not responding." {
		t.Errorf("text %q", r.Text)
	}
	if r.Dict["SUBSYSTEM"] != "pci" || r.Dict["DEVICE"] != "+pci:0000:b3:00.0" {
		t.Errorf("dict %v", r.Dict)
	}
	for _, bad := range []string{"", "no header", "3,1;x", "a,1,2,-;x", "3,b,2,-;x", "3,1,c,-;x", "3,1,99999999999999999999,-;x"} {
		if _, err := ParseRecord([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestSplitRecords(t *testing.T) {
	in := "6,1,10,-;a\n SUBSYSTEM=pci\n\n6,2,20,-;b\n6,3,30,-;c"
	got := splitRecords([]byte(in))
	var seqs []string
	for _, b := range got {
		r, err := ParseRecord(b)
		if err != nil {
			t.Fatalf("%q: %v", b, err)
		}
		seqs = append(seqs, fmt.Sprintf("%d:%s:%s", r.Seq, r.Text, r.Dict["SUBSYSTEM"]))
	}
	if strings.Join(seqs, " ") != "1:a:pci 2:b: 3:c:" {
		t.Errorf("got %v", seqs)
	}
}

// FuzzClassify: any record text is a finding or not, never a panic, and a
// finding's device is in sysfs form.
func FuzzClassify(f *testing.F) {
	for _, c := range realLines {
		f.Add(c.text)
	}
	f.Add("NVRM: Xid (PCI:0000:44:00): 99999999999999999999999, x")
	f.Add("mlx5_core 0000:0d:00.0: synd 0xffffffffffffffffffff: x")
	f.Fuzz(func(t *testing.T, text string) {
		fi, ok := Classify(Record{Text: text, Dict: map[string]string{"DEVICE": "+pci:" + text}})
		if ok && fi.Kind == "" {
			t.Fatalf("finding without a kind: %+v", fi)
		}
		if fi.Device != "" && strings.Count(fi.Device, ":") != 2 {
			t.Fatalf("device %q is not a bus id", fi.Device)
		}
		ReceivedAER(Record{Text: text})
	})
}

// FuzzParseRecord: any bytes parse or fail with ErrNotRecord; a plain file
// of any bytes splits into records without losing or inventing bytes.
func FuzzParseRecord(f *testing.F) {
	f.Add([]byte("3,1342,1843308145,-;NVRM: Xid (PCI:0000:44:00): 79, x\n SUBSYSTEM=pci\n"))
	f.Add([]byte("\\x\\x0\\xzz;;;,,,\n \n=\n"))
	f.Add([]byte("6,1,1,-;\\x0a\\x00\\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := ParseRecord(b); err != nil && !strings.Contains(err.Error(), ErrNotRecord.Error()) {
			t.Fatalf("error %v is not ErrNotRecord", err)
		}
		n := 0
		for _, r := range splitRecords(b) {
			n += len(r)
		}
		if n > len(b) {
			t.Fatalf("split made %d bytes of %d", n, len(b))
		}
	})
}
