package nvml_test

import (
	"math"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpunode/gpunode/gpu/nvml"
	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
	"github.com/gpunode/gpunode/internal/testsupport"
)

// PCIe byte counters that wrap at the driver's 32 bits (although NVML
// reports them as unsigned long long) wrap several times between samples
// at PCIe rates: they are not exported as totals, and the rate comes from
// nvmlDeviceGetPcieThroughput, as it does where the fields are absent.
// Counters that show they are wider are used, without the throughput call.
func TestPCIeCounterWidth(t *testing.T) {
	c := testsupport.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	m := dgx(nvmlfake.H100)
	m.Clock = c.Now
	m.GPUs[1].PCIeCounterBits = 32
	lib := build(t, m)
	nvmlfake.SetFieldReturn(lib, 2, gonvml.FI_DEV_PCIE_COUNT_RX_BYTES, gonvml.ERROR_NOT_SUPPORTED)
	b := nvml.New(lib)
	defer b.Close()
	sample(t, b)
	c.Advance(10 * time.Second)
	all := sample(t, b)

	wide := all[0].PCIe
	if wide.TransmitBytes == nil || *wide.TransmitBytes < 1<<32 || wide.ByteCounterBits != 64 ||
		wide.TransmitBytesPerSecond != nil || wide.ReceiveBytesPerSecond != nil {
		t.Errorf("wide counters: %+v", wide)
	}
	narrow := all[1].PCIe
	if narrow.TransmitBytes != nil || narrow.ReceiveBytes != nil {
		t.Errorf("32-bit counters exported as totals: tx %v rx %v", narrow.TransmitBytes, narrow.ReceiveBytes)
	}
	// The fake's rate is 8 GB/s (tx) and 12 GB/s (rx) at full load, times the load now.
	if r := narrow.TransmitBytesPerSecond; r == nil || *r < 0.1*8e9 || *r > 0.9*8e9 {
		t.Errorf("tx rate %v", r)
	}
	if tx, rx := narrow.TransmitBytesPerSecond, narrow.ReceiveBytesPerSecond; rx == nil || math.Abs(*rx / *tx - 1.5) > 0.01 {
		t.Errorf("rx rate %v against tx %v", rx, tx)
	}
	absent := all[2].PCIe
	if absent.TransmitBytes == nil || absent.ReceiveBytes != nil || absent.ReceiveBytesPerSecond == nil || absent.TransmitBytesPerSecond != nil {
		t.Errorf("rx field absent: %+v", absent)
	}
	// Two GPUs, two rounds: GPU 1 both directions, GPU 2 receive only.
	if n := nvmlfake.Calls(lib, "nvmlDeviceGetPcieThroughput"); n != 2*3 {
		t.Errorf("%d throughput calls, want 6", n)
	}
}
