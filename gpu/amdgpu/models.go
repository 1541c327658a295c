package amdgpu

// model is what a PCI device id tells about an AMD Instinct GPU.
type model struct {
	product string // the name AMD SMI reports
	arch    string // lower case, as gpu.Device.Architecture
}

// models are the Instinct GPUs by PCI device id (physical functions; the
// virtual functions passed to VMs have ids of their own). The ids are the
// PCI ID database's (pci.ids, vendor 1002: 74a0-74bd "Aqua Vanjaram
// [Instinct MI300A/MI300X/MI308X/MI325X ...]"); the amdgpu driver itself
// binds these by class (IP discovery), so its amdgpu_drv.c lists none of
// them. MI350X (75a0) and MI355X (75a3) are gfx950 (CDNA4): 75a3 as an
// MI355X host's lspci shows it; 75a0 is unconfirmed by any source at hand.
var models = map[string]model{
	"0x738c": {"AMD Instinct MI100", "cdna"},
	"0x7408": {"AMD Instinct MI250X", "cdna2"},
	"0x740c": {"AMD Instinct MI250X", "cdna2"},
	"0x740f": {"AMD Instinct MI210", "cdna2"},
	"0x74a0": {"AMD Instinct MI300A", "cdna3"},
	"0x74a1": {"AMD Instinct MI300X", "cdna3"},
	"0x74a2": {"AMD Instinct MI308X", "cdna3"},
	"0x74a5": {"AMD Instinct MI325X", "cdna3"},
	"0x74a9": {"AMD Instinct MI300X HF", "cdna3"},
	"0x74b5": {"AMD Instinct MI300X VF", "cdna3"},
	"0x74b9": {"AMD Instinct MI325X VF", "cdna3"},
	"0x74bd": {"AMD Instinct MI300X HF", "cdna3"},
	"0x75a0": {"AMD Instinct MI350X", "cdna4"},
	"0x75a3": {"AMD Instinct MI355X", "cdna4"},
}

// ModelOf returns the product name and architecture of an Instinct GPU by
// PCI device id ("0x74a1"); ok is false for ids we do not know.
func ModelOf(deviceID string) (product, arch string, ok bool) {
	m, ok := models[deviceID]
	return m.product, m.arch, ok
}
