package topology

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/gpunode/gpunode/internal/hostfs"
)

// PCIeConfig is what a device's configuration space says about DMA
// between devices (read, never written: firmware and setpci own it).
type PCIeConfig struct {
	// MaxReadRequest and MaxPayload are the Device Control register's
	// Max_Read_Request_Size and Max_Payload_Size, in bytes.
	MaxReadRequest int `json:"max_read_request"`
	MaxPayload     int `json:"max_payload"`
	// ATSEnabled is the ATS Control Enable bit; nil without an ATS
	// capability or without the extended configuration space.
	ATSEnabled *bool `json:"ats_enabled,omitempty"`
	// RedirectingBridges are the switch ports on the device's path below
	// its root port whose ACS Control redirects peer-to-peer requests
	// upstream (P2P Request Redirect): DMA to a peer below the same switch
	// then goes up through the root complex.
	RedirectingBridges []string `json:"acs_redirecting_bridges,omitempty"`
}

// pciConfig is what parsePCIConfig reads from one configuration space.
type pciConfig struct {
	maxReadRequest, maxPayload int
	hasPCIe                    bool
	ats                        *bool
	acsRedirect                bool
	// extended is true when the extended space (offset 0x100 and up) was
	// there to read: the kernel gives the first 64 bytes only to
	// unprivileged readers, 256 for conventional PCI.
	extended bool
}

// PCI capability IDs and registers (PCI Express Base Specification, PCI
// Local Bus Specification).
const (
	pciStatus          = 0x06
	pciStatusCapList   = 0x10
	pciCapabilityPtr   = 0x34
	capIDPCIe          = 0x10
	pcieDevCtl         = 0x08
	extCapStart        = 0x100
	extCapIDACS        = 0x000d
	extCapIDATS        = 0x000f
	acsCtl             = 0x06
	acsCtlP2PReqRedir  = 1 << 2
	atsCtl             = 0x06
	atsCtlEnable       = 1 << 15
	maxCapabilityWalks = 64 // a corrupt list loops; real ones hold a handful
)

// parsePCIConfig reads the capabilities a configuration space holds.
func parsePCIConfig(b []byte) (pciConfig, error) {
	var c pciConfig
	if len(b) < 64 {
		return c, fmt.Errorf("%d bytes: want at least the 64-byte header", len(b))
	}
	u16 := func(off int) int { return int(binary.LittleEndian.Uint16(b[off:])) }
	if u16(0) == 0xffff {
		return c, errors.New("vendor 0xffff: the device does not answer (reads all ones)")
	}
	if u16(pciStatus)&pciStatusCapList == 0 {
		return c, nil
	}
	ptr := int(b[pciCapabilityPtr]) &^ 3
	for range maxCapabilityWalks {
		if ptr == 0 {
			break
		}
		if ptr < 0x40 || ptr+pcieDevCtl+2 > len(b) {
			if len(b) <= ptr { // the rest was not readable (unprivileged)
				break
			}
			return c, fmt.Errorf("capability pointer 0x%x: outside 0x40-0xff", ptr)
		}
		if b[ptr] == capIDPCIe {
			devctl := u16(ptr + pcieDevCtl)
			mrrs, mps := (devctl>>12)&7, (devctl>>5)&7
			if mrrs > 5 || mps > 5 {
				return c, fmt.Errorf("PCIe Device Control 0x%04x: reserved size encoding", devctl)
			}
			c.hasPCIe, c.maxReadRequest, c.maxPayload = true, 128<<mrrs, 128<<mps
		}
		ptr = int(b[ptr+1]) &^ 3
	}
	if len(b) < extCapStart+4 {
		return c, nil
	}
	c.extended = true
	off := extCapStart
	for range maxCapabilityWalks {
		h := binary.LittleEndian.Uint32(b[off:])
		if h == 0 || h == 0xffffffff {
			break
		}
		id, next := h&0xffff, int(h>>20)&^3
		switch id {
		case extCapIDACS:
			if off+acsCtl+2 > len(b) {
				return c, fmt.Errorf("ACS capability at 0x%x: truncated", off)
			}
			c.acsRedirect = u16(off+acsCtl)&acsCtlP2PReqRedir != 0
		case extCapIDATS:
			if off+atsCtl+2 > len(b) {
				return c, fmt.Errorf("ATS capability at 0x%x: truncated", off)
			}
			on := u16(off+atsCtl)&atsCtlEnable != 0
			c.ats = &on
		}
		if next == 0 {
			break
		}
		if next < extCapStart || next+4 > len(b) {
			return c, fmt.Errorf("extended capability at 0x%x: next 0x%x outside the extended space", off, next)
		}
		off = next
	}
	return c, nil
}

// readPCIConfig reads a device's configuration space; ok is false when the
// file is absent (fixture trees, some platforms).
func readPCIConfig(fsys hostfs.FS, addr string) (pciConfig, bool, error) {
	path := pciDevicesDir + "/" + addr + "/config"
	b, err := fsys.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return pciConfig{}, false, nil
	}
	if err != nil {
		return pciConfig{}, false, pathErr("read", path, err)
	}
	c, err := parsePCIConfig(b)
	if err != nil {
		return pciConfig{}, false, fmt.Errorf("%s: %w", path, err)
	}
	return c, true, nil
}

// pcieConfig reads a device's own registers and the ACS of the bridges
// on its path; nil for a device without a readable PCIe capability.
func (d *discovery) pcieConfig(dev PCIDevice, fail func(error)) *PCIeConfig {
	c, ok, err := readPCIConfig(d.fsys, dev.Address)
	if err != nil {
		fail(err)
	}
	if !ok || !c.hasPCIe {
		return nil
	}
	out := &PCIeConfig{MaxReadRequest: c.maxReadRequest, MaxPayload: c.maxPayload, ATSEnabled: c.ats}
	// Below the root port (Path[1]): a switch's ports, where peers meet;
	// between root ports traffic crosses the root complex anyway.
	for i, b := range dev.Path {
		if i < 2 || b == dev.Address || !isBDF(b) {
			continue
		}
		bc, ok, err := readPCIConfig(d.fsys, b)
		if err != nil {
			fail(err)
		}
		if ok && bc.acsRedirect {
			out.RedirectingBridges = append(out.RedirectingBridges, b)
		}
	}
	return out
}

// readIOMMUGroupType reads how the IOMMU treats a device's DMA:
// "identity" (passthrough), "DMA" or "DMA-FQ" (translated), "blocked";
// "" when the device has no IOMMU group (no IOMMU, or it is off).
func readIOMMUGroupType(fsys hostfs.FS, addr string) (string, error) {
	path := pciDevicesDir + "/" + addr + "/iommu_group/type"
	s, err := fsys.ReadString(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", pathErr("read", path, err)
	}
	s = strings.TrimSpace(s)
	if s == "" || len(s) > 32 || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return "", fmt.Errorf("%s: %q is not an IOMMU domain type", path, truncate(s, 40))
	}
	return s, nil
}
