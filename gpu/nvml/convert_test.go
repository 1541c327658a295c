package nvml

import (
	"strings"
	"testing"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpunode/gpunode/gpu"
)

func TestCUDAVersion(t *testing.T) {
	for in, want := range map[int]string{12040: "12.4", 12080: "12.8", 11000: "11.0", 10020: "10.2", 13000: "13.0", 0: "", -1: ""} {
		if got := cudaVersion(in); got != want {
			t.Errorf("cudaVersion(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestArchitecture(t *testing.T) {
	for in, want := range map[gonvml.DeviceArchitecture]string{
		gonvml.DEVICE_ARCH_KEPLER: "kepler", gonvml.DEVICE_ARCH_MAXWELL: "maxwell", gonvml.DEVICE_ARCH_PASCAL: "pascal",
		gonvml.DEVICE_ARCH_VOLTA: "volta", gonvml.DEVICE_ARCH_TURING: "turing", gonvml.DEVICE_ARCH_AMPERE: "ampere",
		gonvml.DEVICE_ARCH_ADA: "ada", gonvml.DEVICE_ARCH_HOPPER: "hopper", gonvml.DEVICE_ARCH_BLACKWELL: "blackwell",
		gonvml.DEVICE_ARCH_RUBIN: "rubin", gonvml.DEVICE_ARCH_UNKNOWN: "", gonvml.DEVICE_ARCH_DLA: "", 0: "", 99: "",
	} {
		if got := architecture(in); got != want {
			t.Errorf("architecture(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestNVLinkGeneration(t *testing.T) {
	// nvmlNvlinkVersion_t: 1=1.0 2=2.0 3=2.2 4=3.0 5=3.1 6=4.0 7=5.0 8=6.0.
	want := []int{0, 1, 2, 2, 3, 3, 4, 5, 6, 0, 0}
	for v, g := range want {
		if got := nvlinkGeneration(uint32(v)); got != g {
			t.Errorf("nvlinkGeneration(%d) = %d, want %d", v, got, g)
		}
	}
	if got := nvlinkGeneration(0xffffffff); got != 0 {
		t.Errorf("nvlinkGeneration(0xffffffff) = %d", got)
	}
}

func int8s(s string, size int) []int8 {
	b := make([]int8, size)
	for i := 0; i < len(s) && i < size; i++ {
		b[i] = int8(s[i])
	}
	return b
}

func TestCString(t *testing.T) {
	for _, tc := range []struct {
		in   []int8
		want string
	}{
		{int8s("00000000:1B:00.0", 32), "00000000:1B:00.0"},
		{int8s("", 32), ""},
		{nil, ""},
		{int8s("0000:1B:00.0\x00junk", 32), "0000:1B:00.0"},
		{int8s("no terminator", 4), "no t"}, // a full array has no NUL
		{[]int8{-1, -2, 0}, "\xff\xfe"},
	} {
		if got := cString(tc.in); got != tc.want {
			t.Errorf("cString(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzBusID: whatever bytes NVML leaves in PciInfo.BusId give a string
// without NULs, never a panic.
func FuzzBusID(f *testing.F) {
	for _, s := range []string{"00000000:1B:00.0", "0000:1b:00.0", "", "\x00", "garbage:::", "\xff\xfe\x00x"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		b := make([]int8, len(raw))
		for i, c := range raw {
			b[i] = int8(c)
		}
		s := cString(b)
		if strings.ContainsRune(s, 0) || len(s) > len(raw) {
			t.Fatalf("cString(%q) = %q", raw, s)
		}
		if id := gpu.NormalizePCIBusID(s); strings.ContainsRune(id, 0) {
			t.Fatalf("NormalizePCIBusID(%q) = %q", s, id)
		}
	})
}
