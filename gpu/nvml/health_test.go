package nvml_test

import (
	"reflect"
	"testing"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/nvml"
	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
)

// The facts node verification judges: ECC mode, row remapping and the
// NVLink fabric state, per GPU, with faults planted in the machine.
func TestMemoryAndFabricFacts(t *testing.T) {
	m := dgx(nvmlfake.H100)
	m.GPUs[2].ECCOff = true
	m.GPUs[3].FabricNotStarted = true
	lib := build(t, m)
	nvmlfake.SetRowRemap(lib, 4, 2, true, false)
	b := nvml.New(lib)
	defer b.Close()
	inv := inventory(t, b)
	for _, c := range []struct {
		i      int
		ecc    gpu.ECCMode
		rows   gpu.RemappedRows
		fabric gpu.Fabric
	}{
		{0, gpu.ECCMode{Enabled: true, Pending: true}, gpu.RemappedRows{}, gpu.Fabric{State: "completed", Status: "success"}},
		{1, gpu.ECCMode{Enabled: true, Pending: true}, gpu.RemappedRows{Correctable: 1}, gpu.Fabric{State: "completed", Status: "success"}},
		{2, gpu.ECCMode{}, gpu.RemappedRows{Correctable: 2}, gpu.Fabric{State: "completed", Status: "success"}},
		{3, gpu.ECCMode{Enabled: true, Pending: true}, gpu.RemappedRows{}, gpu.Fabric{State: "not-started"}},
		{4, gpu.ECCMode{Enabled: true, Pending: true}, gpu.RemappedRows{Correctable: 1, Uncorrectable: 2, Pending: true}, gpu.Fabric{State: "completed", Status: "success"}},
	} {
		d := inv.Devices[c.i]
		if d.ECC == nil || *d.ECC != c.ecc {
			t.Errorf("gpu %d: ECC %+v, want %+v", c.i, d.ECC, c.ecc)
		}
		if d.RemappedRows == nil || *d.RemappedRows != c.rows {
			t.Errorf("gpu %d: remapped rows %+v, want %+v", c.i, d.RemappedRows, c.rows)
		}
		if d.Fabric == nil || !reflect.DeepEqual(*d.Fabric, c.fabric) {
			t.Errorf("gpu %d: fabric %+v, want %+v", c.i, d.Fabric, c.fabric)
		}
	}
}

// A100 baseboards have NVSwitches but no fabric registration API state:
// the GPU reports "not supported" and Fabric stays nil.
func TestNoFabricOnAmpere(t *testing.T) {
	b := nvml.New(build(t, dgx(nvmlfake.A100)))
	defer b.Close()
	for _, d := range inventory(t, b).Devices {
		if d.Fabric != nil {
			t.Errorf("gpu %d: fabric %+v on an A100", d.Index, *d.Fabric)
		}
	}
}
