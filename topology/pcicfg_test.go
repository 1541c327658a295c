package topology

import (
	"encoding/binary"
	"slices"
	"strings"
	"testing"
)

// cfgSpace builds a configuration space as the PCI Express Base
// Specification lays it out (the layout lspci and the kernel's
// drivers/pci/pci.c walk): the capability list from 0x34 with a PCIe
// capability at 0x40, its Device Control at +8; extended capabilities
// from 0x100. size is what a reader gets: 4096 for root, 64 for others.
type cfgSpace struct {
	size           int
	devctl         uint16 // 0 leaves the PCIe capability out
	acsCtl, atsCtl *uint16
}

func (c cfgSpace) bytes() []byte {
	b := make([]byte, 4096)
	binary.LittleEndian.PutUint16(b[0:], 0x15b3) // vendor
	if c.devctl != 0 {
		binary.LittleEndian.PutUint16(b[pciStatus:], pciStatusCapList)
		b[pciCapabilityPtr] = 0x60
		b[0x60], b[0x61] = 0x01, 0x40 // power management, next: PCIe
		b[0x40], b[0x41] = capIDPCIe, 0
		binary.LittleEndian.PutUint16(b[0x40+pcieDevCtl:], c.devctl)
	}
	off := 0x100
	var ext [][2]int // id, control offset value
	if c.acsCtl != nil {
		ext = append(ext, [2]int{extCapIDACS, int(*c.acsCtl)})
	}
	if c.atsCtl != nil {
		ext = append(ext, [2]int{extCapIDATS, int(*c.atsCtl)})
	}
	// AER first, as real devices list it.
	ext = append([][2]int{{0x0001, 0}}, ext...)
	for i, e := range ext {
		next := 0
		if i < len(ext)-1 {
			next = off + 0x40
		}
		binary.LittleEndian.PutUint32(b[off:], uint32(e[0])|1<<16|uint32(next)<<20)
		binary.LittleEndian.PutUint16(b[off+6:], uint16(e[1]))
		off = next
	}
	return b[:c.size]
}

func u16p(v uint16) *uint16 { return &v }

// devctl encodes Max_Payload_Size and Max_Read_Request_Size (bytes).
func devctl(mps, mrrs int) uint16 {
	enc := func(n int) uint16 {
		for i := range 6 {
			if 128<<i == n {
				return uint16(i)
			}
		}
		panic(n)
	}
	return enc(mrrs)<<12 | enc(mps)<<5 | 0x000f // + error reporting enables
}

func TestParsePCIConfig(t *testing.T) {
	yes, no := true, false
	for _, tc := range []struct {
		name string
		in   cfgSpace
		want pciConfig
	}{
		{"ConnectX as root", cfgSpace{size: 4096, devctl: devctl(256, 512), atsCtl: u16p(0x8000)},
			pciConfig{hasPCIe: true, maxReadRequest: 512, maxPayload: 256, ats: &yes, extended: true}},
		{"4096 read request, ATS off", cfgSpace{size: 4096, devctl: devctl(512, 4096), atsCtl: u16p(0)},
			pciConfig{hasPCIe: true, maxReadRequest: 4096, maxPayload: 512, ats: &no, extended: true}},
		{"switch port redirecting", cfgSpace{size: 4096, devctl: devctl(128, 512), acsCtl: u16p(0x001d)},
			pciConfig{hasPCIe: true, maxReadRequest: 512, maxPayload: 128, acsRedirect: true, extended: true}},
		{"switch port, ACS source validation only", cfgSpace{size: 4096, devctl: devctl(128, 512), acsCtl: u16p(0x0001)},
			pciConfig{hasPCIe: true, maxReadRequest: 512, maxPayload: 128, extended: true}},
		{"conventional PCI", cfgSpace{size: 256}, pciConfig{}},
		{"unprivileged reader", cfgSpace{size: 64, devctl: devctl(256, 512)}, pciConfig{}},
		{"no extended space", cfgSpace{size: 256, devctl: devctl(256, 512), atsCtl: u16p(0x8000)},
			pciConfig{hasPCIe: true, maxReadRequest: 512, maxPayload: 256}},
	} {
		got, err := parsePCIConfig(tc.in.bytes())
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !sameConfig(got, tc.want) {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func sameConfig(a, b pciConfig) bool {
	if (a.ats == nil) != (b.ats == nil) || (a.ats != nil && *a.ats != *b.ats) {
		return false
	}
	a.ats, b.ats = nil, nil
	return a == b
}

// Garbage is an error naming what is wrong, never a panic or a guess.
func TestParsePCIConfigGarbage(t *testing.T) {
	loop := cfgSpace{size: 4096, devctl: devctl(256, 512)}.bytes()
	loop[0x41] = 0x40 // the PCIe capability points at itself
	selfExt := cfgSpace{size: 4096, devctl: devctl(256, 512), atsCtl: u16p(0x8000)}.bytes()
	binary.LittleEndian.PutUint32(selfExt[0x140:], extCapIDATS|1<<16|0x140<<20) // ATS points at itself
	reserved := cfgSpace{size: 4096, devctl: 7 << 12}.bytes()
	outside := cfgSpace{size: 4096, devctl: devctl(256, 512), acsCtl: u16p(4)}.bytes()
	binary.LittleEndian.PutUint32(outside[0x100:], 0x0001|1<<16|0x0f0<<20) // next below 0x100
	for _, tc := range []struct {
		name string
		in   []byte
		want string // "" for no error
	}{
		{"empty", nil, "want at least the 64-byte header"},
		{"short", make([]byte, 10), "want at least"},
		{"capability loop", loop, ""}, // bounded walk, the capability read once is kept
		{"extended loop", selfExt, ""},
		{"reserved size", reserved, "reserved size encoding"},
		{"next outside", outside, "outside the extended space"},
		{"all ones", slices.Repeat([]byte{0xff}, 4096), "does not answer"},
	} {
		_, err := parsePCIConfig(tc.in)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func FuzzParsePCIConfig(f *testing.F) {
	f.Add(cfgSpace{size: 4096, devctl: devctl(256, 512), acsCtl: u16p(0x1d), atsCtl: u16p(0x8000)}.bytes())
	f.Add(cfgSpace{size: 64}.bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parsePCIConfig(b)
		if err == nil && c.hasPCIe && (c.maxReadRequest < 128 || c.maxReadRequest > 4096) {
			t.Errorf("max read request %d", c.maxReadRequest)
		}
	})
}

// Discovery reads the NIC's and GPU's registers, the ACS of the switch
// ports above them (not the root port's), and the IOMMU domain type.
func TestDiscoverPCIeConfig(t *testing.T) {
	tr := dgxTree(t)
	cfg := func(path string, c cfgSpace) { tr.file("/sys/devices/"+path+"/config", string(c.bytes())) }
	redirect := cfgSpace{size: 4096, devctl: devctl(256, 512), acsCtl: u16p(0x001d)}
	cfg("pci0000:15/0000:15:01.0", redirect) // root port: not counted
	cfg(sw0, cfgSpace{size: 4096, devctl: devctl(256, 512)})
	cfg(sw0+"/0000:17:01.0", redirect)
	cfg(sw0+"/0000:17:00.0", cfgSpace{size: 4096, devctl: devctl(256, 512), acsCtl: u16p(0x0001)})
	cfg(sw0+"/0000:17:01.0/"+addrNIC0, cfgSpace{size: 4096, devctl: devctl(256, 512), atsCtl: u16p(0x8000)})
	cfg(sw0+"/0000:17:00.0/"+addrGPU0, cfgSpace{size: 4096, devctl: devctl(256, 4096)})
	tr.file("/sys/devices/"+sw0+"/0000:17:00.0/"+addrGPU0+"/iommu_group/type", "DMA-FQ\n")
	tr.file("/sys/devices/"+sw0+"/0000:17:01.0/"+addrNIC0+"/iommu_group/type", "identity\n")
	top, err := Discover(t.Context(), tr.fs())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]PCIDevice{}
	for _, d := range top.PCIDevices {
		got[d.Address] = d
	}
	nic, gpu := got[addrNIC0], got[addrGPU0]
	if p := nic.PCIe; p == nil || p.MaxReadRequest != 512 || p.MaxPayload != 256 || p.ATSEnabled == nil || !*p.ATSEnabled ||
		!slices.Equal(p.RedirectingBridges, []string{"0000:17:01.0"}) {
		t.Errorf("NIC PCIe %+v", p)
	}
	if p := gpu.PCIe; p == nil || p.MaxReadRequest != 4096 || p.ATSEnabled != nil || len(p.RedirectingBridges) != 0 {
		t.Errorf("GPU PCIe %+v", p)
	}
	if nic.IOMMUGroupType != "identity" || gpu.IOMMUGroupType != "DMA-FQ" {
		t.Errorf("IOMMU types %q %q", nic.IOMMUGroupType, gpu.IOMMUGroupType)
	}
	if got[addrGPU1].PCIe != nil || got[addrGPU1].IOMMUGroupType != "" {
		t.Errorf("a device without config or IOMMU group: %+v", got[addrGPU1])
	}

	// Garbage in a config file or the domain type is the device's error.
	tr.file("/sys/devices/"+sw0+"/0000:17:01.0/"+addrNIC0+"/config", "xx")
	tr.file("/sys/devices/"+sw0+"/0000:17:00.0/"+addrGPU0+"/iommu_group/type", "DMA x\n")
	top, _ = Discover(t.Context(), tr.fs())
	for _, d := range top.PCIDevices {
		switch d.Address {
		case addrNIC0:
			if d.PCIe != nil || !strings.Contains(strings.Join(d.Errors, ";"), "/config: 2 bytes") {
				t.Errorf("NIC with a garbage config: %+v %v", d.PCIe, d.Errors)
			}
		case addrGPU0:
			if d.IOMMUGroupType != "" || !strings.Contains(strings.Join(d.Errors, ";"), "not an IOMMU domain type") {
				t.Errorf("GPU with a garbage domain type: %q %v", d.IOMMUGroupType, d.Errors)
			}
		}
	}
}
