package nvmlfake

import (
	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// clockReasonsBeforeBlackwell are the nvmlClocksEventReason bits up to
// DisplayClockSetting (0x100); BoardLimit (0x200) and Reliability (0x400)
// are newer.
const clockReasonsBeforeBlackwell = gonvml.ClocksEventReasonAll &^ (gonvml.ClocksEventReasonBoardLimit | gonvml.ClocksEventReasonReliability)

// supportedClockReasons is the model's mask unless a test narrowed it.
func (d *device) supportedClockReasons() uint64 {
	d.f.mu.Lock()
	defer d.f.mu.Unlock()
	if d.clockReasonMask != nil {
		return *d.clockReasonMask
	}
	return d.f.spec.clockReasons
}

func (d *device) GetSupportedClocksEventReasons() (uint64, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetSupportedClocksEventReasons", d, d.supportedClockReasons)
}

func (d *device) GetSupportedClocksThrottleReasons() (uint64, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetSupportedClocksThrottleReasons", d, d.supportedClockReasons)
}

// TemperatureV1 is nvmlDeviceGetTemperatureV with a version 1 struct for
// the GPU sensor. go-nvml's GetTemperatureV returns a handler bound to a
// real device handle, which a fake cannot build, so the backend calls this
// method where the device has it.
func (d *device) TemperatureV1() (gonvml.Temperature, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetTemperatureV", d, func() gonvml.Temperature {
		return gonvml.Temperature{Version: 1<<24 | 12, SensorType: uint32(gonvml.TEMPERATURE_GPU), Temperature: int32(d.tempC(d.f.now()))}
	})
}

// pcieWrap keeps a PCIe byte counter in the width the GPU's spec gives.
func (d *device) pcieWrap(v uint64) uint64 {
	if b := d.spec.PCIeCounterBits; b > 0 && b < 64 {
		return v & (1<<b - 1)
	}
	return v
}

// GetPcieThroughput is the PCIe rate in KB/s (taken as KiB/s) over NVML's
// 20 ms window, which the fake takes as the load now.
func (d *device) GetPcieThroughput(c gonvml.PcieUtilCounter) (uint32, gonvml.Return) {
	if ret := d.f.enter("nvmlDeviceGetPcieThroughput", d); ret != gonvml.SUCCESS {
		return 0, ret
	}
	bps := pcieTxBps
	switch c {
	case gonvml.PCIE_UTIL_TX_BYTES:
	case gonvml.PCIE_UTIL_RX_BYTES:
		bps = pcieRxBps
	default:
		return 0, gonvml.ERROR_INVALID_ARGUMENT
	}
	return uint32(bps * d.load(d.f.now()) / 1024), gonvml.SUCCESS
}
