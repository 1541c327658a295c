package nvmlfake

import (
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// device is one fake GPU: go-nvml's mock device (identity, MIG machinery)
// with the functions the agent calls as methods, its spec and the faults
// injected into it. Mutable fields are guarded by machine.mu.
type device struct {
	*server.Device
	f      *machine
	index  int
	spec   GPU
	serial string
	// phase shifts this GPU's load curve against the others'.
	phase            float64
	curGen, curWidth int

	down      map[int]time.Time // NVLink -> since when it is down
	lost      bool
	rets      map[string]gonvml.Return
	delays    map[string]time.Duration
	fieldRets map[uint32]gonvml.Return
	// Injected errors on top of the organic ones.
	eccCorrected, eccUncorrected uint64
	remapUncorrectable           uint64
	remapPending, remapFailed    bool
	// mig are the MIG devices of a MIG-enabled GPU, in index order.
	mig []*migDevice
	// clockReasonMask, when set, replaces the model's supported clock
	// event reasons (SetSupportedClockEventReasons).
	clockReasonMask *uint64
	// forcedClockReasons are held from SetClockEventReasons on.
	forcedClockReasons uint64
	// reset is set by ResetGPU: the driver's counters count from resetAt
	// (seconds since the machine was built).
	reset   bool
	resetAt float64
	// The injected ECC totals at the last ResetGPU: volatile counts start
	// over there, aggregate ones do not.
	eccCorrectedAtReset, eccUncorrectedAtReset uint64
	// idle is set by SetIdle: the GPU sits in P8 with its link at Gen1.
	idle bool
}

var _ gonvml.Device = (*device)(nil)

// Identity and capabilities: fixed for the life of the machine.

func (d *device) GetUUID() (string, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetUUID", d, func() string { return d.UUID })
}

func (d *device) GetName() (string, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetName", d, func() string { return d.Config.Name })
}

func (d *device) GetArchitecture() (gonvml.DeviceArchitecture, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetArchitecture", d, func() gonvml.DeviceArchitecture { return d.Config.Architecture })
}

func (d *device) GetCudaComputeCapability() (int, int, gonvml.Return) {
	v, ret := answer(d.f, "nvmlDeviceGetCudaComputeCapability", d, func() [2]int { return [2]int{d.Config.CudaMajor, d.Config.CudaMinor} })
	return v[0], v[1], ret
}

func (d *device) GetPciInfo() (gonvml.PciInfo, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetPciInfo", d, func() gonvml.PciInfo { return pciInfo(d.PciBusID, d.Config.PciDeviceId) })
}

func (d *device) GetMinorNumber() (int, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetMinorNumber", d, func() int { return d.Minor })
}

func (d *device) GetNumaNodeId() (int, gonvml.Return) {
	if ret := d.f.enter("nvmlDeviceGetNumaNodeId", d); ret != gonvml.SUCCESS {
		return 0, ret
	}
	if d.spec.NUMANode < 0 { // the platform has no NUMA information
		return 0, gonvml.ERROR_NOT_SUPPORTED
	}
	return d.spec.NUMANode, gonvml.SUCCESS
}

func (d *device) GetMigMode() (int, int, gonvml.Return) {
	if ret := d.f.enter("nvmlDeviceGetMigMode", d); ret != gonvml.SUCCESS {
		return 0, 0, ret
	}
	d.RLock() // the mock's SetMigMode writes it
	defer d.RUnlock()
	return d.MigMode, d.MigMode, gonvml.SUCCESS
}

func (d *device) GetNvLinkState(link int) (gonvml.EnableState, gonvml.Return) {
	if ret := d.f.enter("nvmlDeviceGetNvLinkState", d); ret != gonvml.SUCCESS {
		return 0, ret
	}
	if link < 0 || link >= d.f.spec.links {
		return 0, gonvml.ERROR_INVALID_ARGUMENT
	}
	d.f.mu.Lock()
	_, down := d.down[link]
	d.f.mu.Unlock()
	if down {
		return gonvml.FEATURE_DISABLED, gonvml.SUCCESS
	}
	return gonvml.FEATURE_ENABLED, gonvml.SUCCESS
}

func (d *device) GetNvLinkVersion(link int) (uint32, gonvml.Return) {
	if ret := d.f.enter("nvmlDeviceGetNvLinkVersion", d); ret != gonvml.SUCCESS {
		return 0, ret
	}
	if link < 0 || link >= d.f.spec.links {
		return 0, gonvml.ERROR_INVALID_ARGUMENT
	}
	return uint32(d.f.spec.linkVersion), gonvml.SUCCESS
}

func (d *device) GetEnforcedPowerLimit() (uint32, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetEnforcedPowerLimit", d, func() uint32 { return d.f.spec.powerMW })
}

// GetCurrPcieLinkGeneration is the trained generation at full performance
// (P0) and Gen1 in P8 (SetIdle): the driver lowers the link speed with the
// performance state (NVIDIA/open-gpu-kernel-modules#731: P8 Gen1), as
// lspci's LnkSta shows on an idle GPU.
func (d *device) GetCurrPcieLinkGeneration() (int, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetCurrPcieLinkGeneration", d, func() int {
		if d.pstate() != gonvml.PSTATE_0 {
			return 1
		}
		return d.curGen
	})
}

func (d *device) GetMaxPcieLinkGeneration() (int, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetMaxPcieLinkGeneration", d, func() int { return d.f.spec.pcieGen })
}

func (d *device) GetCurrPcieLinkWidth() (int, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetCurrPcieLinkWidth", d, func() int { return d.curWidth })
}

func (d *device) GetMaxPcieLinkWidth() (int, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetMaxPcieLinkWidth", d, func() int { return d.f.spec.pcieWidth })
}

func (d *device) GetSerial() (string, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetSerial", d, func() string { return d.serial })
}

func (d *device) GetVbiosVersion() (string, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetVbiosVersion", d, func() string { return d.f.spec.vbios })
}

func (d *device) GetEccMode() (gonvml.EnableState, gonvml.EnableState, gonvml.Return) {
	if ret := d.f.enter("nvmlDeviceGetEccMode", d); ret != gonvml.SUCCESS {
		return 0, 0, ret
	}
	if d.spec.ECCOff {
		return gonvml.FEATURE_DISABLED, gonvml.FEATURE_DISABLED, gonvml.SUCCESS
	}
	return gonvml.FEATURE_ENABLED, gonvml.FEATURE_ENABLED, gonvml.SUCCESS
}

// GetGpuFabricInfo answers as a GPU on an NVSwitch baseboard whose fabric
// manager has (or, with FabricNotStarted, has not) programmed the fabric;
// other models report the state "not supported".
func (d *device) GetGpuFabricInfo() (gonvml.GpuFabricInfo, gonvml.Return) {
	if ret := d.f.enter("nvmlDeviceGetGpuFabricInfo", d); ret != gonvml.SUCCESS {
		return gonvml.GpuFabricInfo{}, ret
	}
	info := gonvml.GpuFabricInfo{State: gonvml.GPU_FABRIC_STATE_NOT_SUPPORTED, Status: uint32(gonvml.ERROR_NOT_SUPPORTED)}
	switch {
	case !d.f.spec.fabric:
	case d.spec.FabricNotStarted:
		info.State, info.Status = gonvml.GPU_FABRIC_STATE_NOT_STARTED, uint32(gonvml.ERROR_UNINITIALIZED)
	default:
		info.State, info.Status = gonvml.GPU_FABRIC_STATE_COMPLETED, uint32(gonvml.SUCCESS)
		info.ClusterUuid, info.CliqueId = d.f.cluster, d.f.clique
		if c := d.spec.FabricClique; c != nil {
			info.CliqueId = *c
		}
	}
	return info, gonvml.SUCCESS
}
