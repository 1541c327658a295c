package amdgpu

import "testing"

// The Instinct ids as the PCI ID database names them (pci.ids, vendor
// 1002, "Aqua Vanjaram [Instinct ...]" entries 74a0-74bd), plus the
// CDNA4 parts. The VF and second HF ids were missing before.
func TestModelOf(t *testing.T) {
	for id, want := range map[string][2]string{
		"0x74a1": {"AMD Instinct MI300X", "cdna3"},
		"0x74a5": {"AMD Instinct MI325X", "cdna3"},
		"0x74b9": {"AMD Instinct MI325X VF", "cdna3"},
		"0x74bd": {"AMD Instinct MI300X HF", "cdna3"},
		"0x75a0": {"AMD Instinct MI350X", "cdna4"},
		"0x75a3": {"AMD Instinct MI355X", "cdna4"},
	} {
		product, arch, ok := ModelOf(id)
		if !ok || product != want[0] || arch != want[1] {
			t.Errorf("%s: %q %q %v, want %v", id, product, arch, ok, want)
		}
	}
	if _, _, ok := ModelOf("0x7550"); ok { // Navi 48, a Radeon: not ours to name
		t.Error("0x7550 known")
	}
}
