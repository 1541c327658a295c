package hwcheck

import (
	"encoding/xml"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// SMILog is what the harness reads of `nvidia-smi -q -x`. Every value is
// the tool's text; "N/A" and absent elements are empty.
type SMILog struct {
	DriverVersion string   `xml:"driver_version"`
	CUDAVersion   string   `xml:"cuda_version"`
	AttachedGPUs  string   `xml:"attached_gpus"`
	GPUs          []SMIGPU `xml:"gpu"`
}

// SMIGPU is one <gpu> element.
type SMIGPU struct {
	ID           string `xml:"id,attr"`
	ProductName  string `xml:"product_name"`
	Architecture string `xml:"product_architecture"`
	UUID         string `xml:"uuid"`
	Serial       string `xml:"serial"`
	VBIOSVersion string `xml:"vbios_version"`
	MIG          struct {
		Current string `xml:"current_mig"`
		Pending string `xml:"pending_mig"`
	} `xml:"mig_mode"`
	PCI struct {
		BusID string `xml:"pci_bus_id"`
		Link  struct {
			Gen struct {
				Max     string `xml:"max_link_gen"`
				Current string `xml:"current_link_gen"`
			} `xml:"pcie_gen"`
			Widths struct {
				Max     string `xml:"max_link_width"`
				Current string `xml:"current_link_width"`
			} `xml:"link_widths"`
		} `xml:"pci_gpu_link_info"`
	} `xml:"pci"`
	PerformanceState string `xml:"performance_state"`
	FBMemory         struct {
		Total    string `xml:"total"`
		Reserved string `xml:"reserved"`
		Used     string `xml:"used"`
		Free     string `xml:"free"`
	} `xml:"fb_memory_usage"`
	Utilization struct {
		GPU    string `xml:"gpu_util"`
		Memory string `xml:"memory_util"`
	} `xml:"utilization"`
	ECC struct {
		Current string `xml:"current_ecc"`
		Pending string `xml:"pending_ecc"`
	} `xml:"ecc_mode"`
	Temperature struct {
		GPU    string `xml:"gpu_temp"`
		Memory string `xml:"memory_temp"`
	} `xml:"temperature"`
	// Power is <gpu_power_readings> (DTD v12 and later, driver R535) or
	// <power_readings> (older drivers); see PowerLimit.
	Power    smiPower `xml:"gpu_power_readings"`
	OldPower smiPower `xml:"power_readings"`
	Clocks   struct {
		Graphics string `xml:"graphics_clock"`
		SM       string `xml:"sm_clock"`
		Memory   string `xml:"mem_clock"`
		Video    string `xml:"video_clock"`
	} `xml:"clocks"`
	Fabric struct {
		State  string `xml:"state"`
		Status string `xml:"status"`
		// The multi-node NVLink clique (GB200/GB300 NVL); N/A elsewhere.
		CliqueID    string `xml:"cliqueId"`
		ClusterUUID string `xml:"clusterUuid"`
	} `xml:"fabric"`
}

type smiPower struct {
	Draw string `xml:"power_draw"`
	// Enforced is the limit the GPU holds to (older drivers).
	Enforced string `xml:"enforced_power_limit"`
	// Current is the enforced limit in DTD v12 ("current_power_limit").
	Current string `xml:"current_power_limit"`
}

// ParseSMIXML parses `nvidia-smi -q -x`. The DOCTYPE names a DTD file
// that is not read (encoding/xml does not fetch external entities).
func ParseSMIXML(r io.Reader) (*SMILog, error) {
	dec := xml.NewDecoder(r)
	// nvidia-smi declares UTF-8 (older versions ISO-8859-1 on Windows);
	// its text is ASCII, so read any declared charset as is.
	dec.CharsetReader = func(_ string, in io.Reader) (io.Reader, error) { return in, nil }
	var log SMILog
	if err := dec.Decode(&log); err != nil {
		return nil, fmt.Errorf("parse nvidia-smi -q -x: %w", err)
	}
	if len(log.GPUs) == 0 && log.DriverVersion == "" {
		return nil, fmt.Errorf("parse nvidia-smi -q -x: no <driver_version> and no <gpu>: not nvidia-smi's log")
	}
	return &log, nil
}

// PowerLimit is the enforced power limit's text, from whichever element
// the driver writes.
func (g *SMIGPU) PowerLimit() string {
	for _, s := range []string{g.Power.Current, g.OldPower.Enforced, g.OldPower.Current} {
		if na(s) == "" {
			continue
		}
		return s
	}
	return ""
}

// na maps nvidia-smi's "not available" spellings to "".
func na(s string) string {
	s = strings.TrimSpace(s)
	switch s {
	case "N/A", "[N/A]", "[Not Supported]", "Not Supported", "[Unknown Error]", "[Insufficient Permissions]":
		return ""
	}
	return s
}

// number reads the leading number of an nvidia-smi value ("81920 MiB",
// "67.03 W", "16x", "27 C", "40 %"); ok is false for N/A and text.
func number(s string) (float64, bool) {
	s = na(s)
	if s == "" {
		return 0, false
	}
	end := 0
	for end < len(s) && (s[end] >= '0' && s[end] <= '9' || s[end] == '.' || s[end] == '-') {
		end++
	}
	v, err := strconv.ParseFloat(s[:end], 64)
	return v, err == nil
}

// modeBool reads "Enabled"/"Disabled"; ok is false for N/A.
func modeBool(s string) (enabled, ok bool) {
	switch strings.ToLower(na(s)) {
	case "enabled", "enable", "on":
		return true, true
	case "disabled", "disable", "off":
		return false, true
	}
	return false, false
}

// fabricState maps nvidia-smi's fabric state ("Completed", "In Progress",
// "Not Started", "Not Supported") to gpu.Fabric's spelling; "" when the
// GPU has no fabric.
func fabricState(s string) string {
	s = strings.ToLower(na(s))
	switch s {
	case "", "not supported", "n/a":
		return ""
	}
	return strings.ReplaceAll(s, " ", "-")
}
