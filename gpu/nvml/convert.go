package nvml

import (
	"fmt"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// cudaVersion turns NVML's integer CUDA version (1000*major + 10*minor,
// 12040) into "12.4"; 0 or less means the driver did not say.
func cudaVersion(v int) string {
	if v <= 0 {
		return ""
	}
	return fmt.Sprintf("%d.%d", v/1000, v%1000/10)
}

// architecture names a DeviceArchitecture in lower case; values this
// version does not know give "".
func architecture(a gonvml.DeviceArchitecture) string {
	switch a {
	case gonvml.DEVICE_ARCH_KEPLER:
		return "kepler"
	case gonvml.DEVICE_ARCH_MAXWELL:
		return "maxwell"
	case gonvml.DEVICE_ARCH_PASCAL:
		return "pascal"
	case gonvml.DEVICE_ARCH_VOLTA:
		return "volta"
	case gonvml.DEVICE_ARCH_TURING:
		return "turing"
	case gonvml.DEVICE_ARCH_AMPERE:
		return "ampere"
	case gonvml.DEVICE_ARCH_ADA:
		return "ada"
	case gonvml.DEVICE_ARCH_HOPPER:
		return "hopper"
	case gonvml.DEVICE_ARCH_BLACKWELL:
		return "blackwell"
	case gonvml.DEVICE_ARCH_RUBIN:
		return "rubin"
	}
	return ""
}

// nvlinkGeneration maps NVML's nvmlNvlinkVersion_t, an enum that also
// numbers point releases (2.2, 3.1), to the NVLink generation; 0 if unknown.
func nvlinkGeneration(v uint32) int {
	switch gonvml.NvlinkVersion(v) {
	case gonvml.NVLINK_VERSION_1_0:
		return 1
	case gonvml.NVLINK_VERSION_2_0, gonvml.NVLINK_VERSION_2_2:
		return 2
	case gonvml.NVLINK_VERSION_3_0, gonvml.NVLINK_VERSION_3_1:
		return 3
	case gonvml.NVLINK_VERSION_4_0:
		return 4
	case gonvml.NVLINK_VERSION_5_0:
		return 5
	case gonvml.NVLINK_VERSION_6_0:
		return 6
	}
	return 0
}

// cString reads a NUL-terminated C char array (NVML's PciInfo.BusId). An
// array without a NUL is taken whole.
func cString(b []int8) string {
	buf := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		buf = append(buf, byte(c))
	}
	return string(buf)
}
