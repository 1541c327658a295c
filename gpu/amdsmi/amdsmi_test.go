package amdsmi

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/internal/source"
)

// fakeLib compiles testdata/fake_amdsmi.c into a shared library with the
// given -D switches and returns its path.
func fakeLib(t *testing.T, defines ...string) string {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Fatalf("gcc builds the fake libamd_smi.so: %v", err)
	}
	lib := filepath.Join(t.TempDir(), "libamd_smi.so")
	args := []string{"-shared", "-fPIC", "-Wall", "-Werror", "-O1", "-o", lib}
	for _, d := range defines {
		args = append(args, "-D"+d)
	}
	if out, err := exec.Command(gcc, append(args, "testdata/fake_amdsmi.c")...).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return lib
}

// The same two GPUs, read through each library version's own structs:
// 24.7 (ROCm 6.3), 25.2 (ROCm 6.4.0, whose amdsmi_get_power_info takes a
// sensor index), 25.3 (ROCm 6.4.1 on), 26.0 (ROCm 7.0) and 26.1 (ROCm
// 7.1 on, shorter link entries). Before the 25.x and 26.x layouts, those
// libraries were refused.
func TestInventoryAndSample(t *testing.T) {
	for _, tc := range []struct {
		defines []string
		version Version
		str     string
	}{
		{nil, Version{24, 7, 0, 1}, "24.7.0.1"},
		{[]string{"FAKE_LAYOUT=25", "FAKE_MINOR=2"}, Version{0, 25, 2, 0}, "25.2.0"},
		{[]string{"FAKE_LAYOUT=25", "FAKE_MINOR=3"}, Version{0, 25, 3, 0}, "25.3.0"},
		{[]string{"FAKE_LAYOUT=26", "FAKE_MINOR=0"}, Version{0, 26, 0, 0}, "26.0.0"},
		{[]string{"FAKE_LAYOUT=26", "FAKE_MINOR=1"}, Version{0, 26, 1, 0}, "26.1.0"},
	} {
		t.Run(tc.str, func(t *testing.T) { inventoryAndSample(t, fakeLib(t, tc.defines...), tc.version, tc.str) })
	}
}

func inventoryAndSample(t *testing.T, lib string, version Version, versionString string) {
	b, err := Open(lib)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Version() != version || b.Version().String() != versionString {
		t.Errorf("version %v", b.Version())
	}
	inv, err := b.Inventory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if inv.Backend != "amdsmi" || inv.DriverVersion != "6.10.5" || inv.LibraryVersion != versionString || len(inv.Devices) != 2 {
		t.Fatalf("%+v", inv)
	}
	d := inv.Devices[1]
	if d.Index != 1 || d.Vendor != gpu.AMD || d.Product != "AMD Instinct MI300X" || d.Architecture != "cdna3" ||
		d.PCIDeviceID != "0x74a1" || d.PCIBusID != "0001:85:00.0" || d.NUMANode != 1 || d.MemoryBytes != 206141652992 ||
		d.ComputeUnits != 304 || d.UUID != "b2ff74a1-0000-1000-8000-7061a8a42be9" || d.Serial != "0x5678" {
		t.Errorf("%+v", d)
	}
	if d.Partition == nil || d.Partition.Compute != "SPX" || d.Partition.Memory != "NPS1" {
		t.Errorf("partition %+v", d.Partition)
	}
	if d.Interconnect == nil || *d.Interconnect != (gpu.Interconnect{Kind: "xgmi", Links: 7, Active: 7}) {
		t.Errorf("interconnect %+v", d.Interconnect)
	}

	samples, err := b.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s := samples[0]
	if !s.Up || s.PCIBusID != "0000:15:00.0" || *s.Utilization != 0.87 || *s.MemoryUtilization != 0.3 ||
		*s.MemoryUsedBytes != 100<<30 || *s.MemoryFreeBytes != 206141652992-100<<30 || *s.PowerWatts != 612 ||
		*s.PCIe.ReplayErrors != 2 || len(s.Errors) != 0 {
		t.Fatalf("%+v", s)
	}
	if len(s.Temperatures) != 2 || s.Temperatures[0] != (gpu.Temperature{Sensor: "gpu", Celsius: 61}) || s.Temperatures[1].Celsius != 53 {
		t.Errorf("temperatures %+v", s.Temperatures)
	}
	if len(s.Clocks) != 2 || s.Clocks[0].Hertz != 1420e6 || s.Clocks[1] != (gpu.Clock{Clock: "memory", Hertz: 1300e6}) {
		t.Errorf("clocks %+v", s.Clocks)
	}
	if len(s.ECC) != 2 || s.ECC[0].Count != 12 || s.ECC[1].Count != 1 {
		t.Errorf("ecc %+v", s.ECC)
	}
	ic := s.Interconnect
	if ic == nil || ic.Kind != "xgmi" || len(ic.Links) != 7 || ic.ActiveLinks() != 7 ||
		*ic.Links[0].ReceiveBytes != 1000*1024 || *ic.Links[6].TransmitBytes != 14000*1024 {
		t.Errorf("interconnect %+v", ic)
	}
	// Energy: the fake adds one joule per call.
	e1 := *s.EnergyMillijoules
	again, _ := b.Sample(context.Background())
	if d := *again[0].EnergyMillijoules - e1; d < 1990 || d > 2010 { // two calls in between (GPU 1, then GPU 0)
		t.Errorf("energy moved %d mJ", d)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Sample(context.Background()); !errors.Is(err, source.ErrAbsent) {
		t.Errorf("after Close: %v", err)
	}
}

// A library missing, missing a function, of a version we do not know, or
// with no driver is absent, with the reason; nothing crashes.
func TestAbsent(t *testing.T) {
	for name, tc := range map[string]struct {
		path string
		want string
	}{
		"missing library":  {filepath.Join(t.TempDir(), "libamd_smi.so"), "cannot open shared object file"},
		"missing symbol":   {fakeLib(t, "OMIT_PROCESSORS"), "lacks amdsmi_get_processor_handles"},
		"newer version":    {fakeLib(t, "FAKE_LAYOUT=26", "FAKE_MAJOR=27"), "AMD SMI 27.3.0 is not a version whose structs we know"},
		"25.x pre-release": {fakeLib(t, "FAKE_LAYOUT=25", "FAKE_MINOR=1"), "AMD SMI 25.1.0 is not a version"},
		"older version":    {fakeLib(t, "FAKE_YEAR=23"), "AMD SMI 23.7.0.1"},
		// A library numbered 25.x whose structs are 24.7's: the ASIC info
		// read through the 25.x layout is no AMD GPU's, so it is not used.
		"layout mismatch":  {fakeLib(t, "FAKE_YEAR=25"), "AMD SMI 25.7.0: ASIC info does not read as the layout we declared"},
		"ROCm 6.2":         {fakeLib(t, "FAKE_MAJOR=6"), "AMD SMI 24.6.0.1"},
		"driver not found": {fakeLib(t, "INIT_STATUS=34"), "amdsmi_init: driver not loaded"},
		"not a library":    {"testdata/fake_amdsmi.c", "invalid ELF header"},
	} {
		b, err := Open(tc.path)
		if b != nil || !errors.Is(err, source.ErrAbsent) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v (want absent, %q)", name, err, tc.want)
		}
		// A library that is there but of a version we cannot read is told
		// from one that is missing or broken.
		versionUnknown := !slices.Contains([]string{"missing library", "missing symbol", "driver not found", "not a library"}, name)
		if errors.Is(err, ErrUnsupportedVersion) != versionUnknown {
			t.Errorf("%s: %v: unsupported version %v, want %v", name, err, !versionUnknown, versionUnknown)
		}
	}
	// With no path, the default names are tried and all reasons given.
	if _, err := Open(""); !errors.Is(err, source.ErrAbsent) || !strings.Contains(err.Error(), "libamd_smi.so") {
		t.Errorf("defaults: %v", err)
	}
}

// One GPU's failures stay on that GPU; unsupported readings are no error.
func TestPerDeviceErrors(t *testing.T) {
	b, err := Open(fakeLib(t, "FAIL_GPU=1"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	samples, err := b.Sample(context.Background())
	if err == nil || !strings.Contains(err.Error(), "gpu 1: amdsmi_get_gpu_activity: permission denied") {
		t.Fatalf("error %v", err)
	}
	if s := samples[0]; len(s.Errors) != 0 || s.Utilization == nil || len(s.ECC) != 2 {
		t.Errorf("gpu 0: %+v", s)
	}
	if s := samples[1]; !s.Up || len(s.Errors) != 1 || s.Utilization != nil || s.ECC != nil || s.PowerWatts == nil {
		t.Errorf("gpu 1: %+v", s)
	}
}

// An optional function the library lacks is simply not reported.
func TestOptionalSymbolMissing(t *testing.T) {
	b, err := Open(fakeLib(t, "OMIT_LINKS"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	inv, err := b.Inventory(context.Background())
	if err != nil || inv.Devices[0].Interconnect != nil {
		t.Fatalf("%+v %v", inv.Devices[0], err)
	}
	samples, err := b.Sample(context.Background())
	if err != nil || samples[0].Interconnect != nil || samples[0].Utilization == nil {
		t.Fatalf("%+v %v", samples[0], err)
	}
}

// A library that writes more than our structs hold (a newer layout) hits
// the shim's padding, not Go memory.
func TestLargerStructs(t *testing.T) {
	b, err := Open(fakeLib(t, "BIG_STRUCTS"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for range 3 {
		if _, err := b.Inventory(context.Background()); err != nil {
			t.Fatal(err)
		}
		samples, err := b.Sample(context.Background())
		if err != nil || *samples[1].Utilization != 0.87 {
			t.Fatalf("%+v %v", samples, err)
		}
	}
}

func TestBusID(t *testing.T) {
	for v, want := range map[uint64]string{
		0x15 << 8:                    "0000:15:00.0",
		0x85<<8 | 1<<16 | 3<<3 | 1:   "0001:85:03.1",
		0x10000<<16 | 0xe1<<8 | 7<<3: "10000:e1:07.0",
	} {
		if got := busID(v); got != want {
			t.Errorf("busID(%#x) = %s, want %s", v, got, want)
		}
	}
}

// amdsmi_version_t's first words, as each numbering fills them.
func TestVersionOf(t *testing.T) {
	for w, want := range map[[4]uint32]string{
		{24, 7, 0, 1}:    "24.7.0.1", // ROCm 6.3: year, major, minor, release
		{0, 25, 3, 0}:    "25.3.0",   // ROCm 6.4: the year member kept, unused
		{25, 25, 3, 0}:   "25.3.0",   // ... or filled with the major
		{25, 2, 0, 0}:    "25.2.0",   // 25.x without the year member
		{26, 1, 0, 7777}: "26.1.0",   // ROCm 7.x: major, minor, release, padding
	} {
		if got := versionOf(w).String(); got != want {
			t.Errorf("%v: %s, want %s", w, got, want)
		}
	}
}

// A library whose link entries are not the size its version should have
// (a 26.1 numbered library with 26.0's entries) is caught by the link
// types it seems to report: an error, no links, the rest read.
func TestLinkLayoutMismatch(t *testing.T) {
	b, err := Open(fakeLib(t, "FAKE_LAYOUT=26", "FAKE_MINOR=1", "FAKE_LONG_LINKS"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	samples, err := b.Sample(context.Background())
	if err == nil || !strings.Contains(err.Error(), "amdsmi_get_link_metrics: unexpected data") {
		t.Fatalf("error %v", err)
	}
	if s := samples[0]; s.Interconnect != nil || s.PowerWatts == nil || *s.PowerWatts != 612 {
		t.Errorf("%+v", s)
	}
}
