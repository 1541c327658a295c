package hwcheck

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/gpunode/gpunode/gpu"
)

const secAMD = "amd"

// AMDStatic is one GPU of `amd-smi static --json`.
type AMDStatic struct {
	GPU  int `json:"gpu"`
	ASIC struct {
		MarketName string `json:"market_name"`
		DeviceID   string `json:"device_id"`
	} `json:"asic"`
	Bus struct {
		BDF string `json:"bdf"`
	} `json:"bus"`
	VRAM struct {
		Size     amdValue `json:"size"`
		VRAMSize amdValue `json:"vram_size"`
	} `json:"vram"`
}

// amdValue is amd-smi's {"value": 196592, "unit": "MB"}; value may be
// "N/A".
type amdValue struct {
	Value json.RawMessage `json:"value"`
	Unit  string          `json:"unit"`
}

// mib returns the value in MiB (amd-smi's "MB" are MiB: an MI300X's
// 192 GiB read 196592 MB).
func (v amdValue) mib() (float64, bool) {
	f, err := strconv.ParseFloat(strings.Trim(string(v.Value), `"`), 64)
	if err != nil {
		return 0, false
	}
	switch strings.ToUpper(v.Unit) {
	case "B":
		return f / (1 << 20), true
	case "KB":
		return f / 1024, true
	case "MB", "MIB", "":
		return f, true
	case "GB", "GIB":
		return f * 1024, true
	}
	return 0, false
}

// ParseAMDSMIStatic parses `amd-smi static --json`: a list of GPUs, or
// (newer amd-smi) an object with the list under "gpu_data".
func ParseAMDSMIStatic(r io.Reader) ([]AMDStatic, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read amd-smi static --json: %w", err)
	}
	var list []AMDStatic
	if err := json.Unmarshal(b, &list); err == nil {
		return list, nil
	}
	var wrapped struct {
		GPUData []AMDStatic `json:"gpu_data"`
	}
	if err := json.Unmarshal(b, &wrapped); err != nil {
		return nil, fmt.Errorf("parse amd-smi static --json: %w", err)
	}
	return wrapped.GPUData, nil
}

// CompareAMD compares the agent's AMD GPUs with amd-smi, matched by PCI
// bus id.
func CompareAMD(in *Inspect, static []AMDStatic) []Row {
	var agent []gpu.Device
	for _, d := range in.GPUs {
		if d.Vendor == gpu.AMD {
			agent = append(agent, d)
		}
	}
	rows := []Row{exact(secAMD, "", "GPU count", strconv.Itoa(len(agent)), strconv.Itoa(len(static)))}
	for _, s := range static {
		bus := gpu.NormalizePCIBusID(s.Bus.BDF)
		var d *gpu.Device
		for i := range agent {
			if agent[i].PCIBusID == bus {
				d = &agent[i]
			}
		}
		dev := fmt.Sprintf("gpu%d", s.GPU)
		if d == nil {
			rows = append(rows, Row{Section: secAMD, Device: dev, Fact: "GPU", Agent: "(missing)", Vendor: s.ASIC.MarketName + " at " + bus, Verdict: Differ})
			continue
		}
		rows = append(rows, exact(secAMD, dev, "product", d.Product, s.ASIC.MarketName))
		if s.ASIC.DeviceID != "" {
			rows = append(rows, exact(secAMD, dev, "PCI device id", strings.ToLower(d.PCIDeviceID), strings.ToLower(s.ASIC.DeviceID)))
		}
		size, ok := s.VRAM.Size.mib()
		if !ok {
			size, ok = s.VRAM.VRAMSize.mib()
		}
		if ok {
			r := exact(secAMD, dev, "memory total (MiB)", strconv.FormatUint(d.MemoryBytes>>20, 10), strconv.FormatFloat(size, 'f', -1, 64))
			r.Tolerance = "1 MiB"
			if math.Abs(float64(d.MemoryBytes)/(1<<20)-size) <= 1 {
				r.Verdict = Agree
			}
			rows = append(rows, r)
		}
	}
	return rows
}
