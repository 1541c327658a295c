package labels

import (
	"slices"
	"strings"

	"github.com/gpunode/gpunode/internal/source"
)

// SetName names a label set that can be switched on or off in the
// configuration (labels.sets).
type SetName string

const (
	// GPUNode is the agent's own set, under the configurable domain.
	GPUNode SetName = "gpunode"
	// LLMD holds the keys llm-d deployment manifests select on.
	LLMD SetName = "llm-d"
	// NVIDIA holds GPU Feature Discovery compatible keys, for clusters without GFD.
	NVIDIA SetName = "nvidia"
	// AMD holds AMD GPU node labeller compatible keys.
	AMD SetName = "amd"
)

// SetNames lists every label set in the order the README documents them.
var SetNames = []SetName{GPUNode, LLMD, NVIDIA, AMD}

// Source names a group of discovery sources a label's value depends on.
// While one of them fails, the label keeps its last good value.
type Source string

const (
	SourceGPU      Source = "gpu" // the GPU backend (source.GPUBackends)
	SourceRDMA     Source = source.RDMA
	SourceTopology Source = source.Topology
	// SourceTuning is the daemon's tuning loop, not a discovery source:
	// its labels come in through Inputs.Tuning.
	SourceTuning Source = "tuning"
	// SourceVerify is the daemon's node verification, run on each
	// discovery; its label comes in through Inputs.Verified.
	SourceVerify Source = "verify"
)

// Def documents one label key. Every label the agent writes has a Def;
// the README table is generated from them.
type Def struct {
	// Key is the full key, or for Own keys the part after "<domain>/".
	// A trailing ".<name>" stands for a value-dependent suffix (AMD's
	// per-value counter keys).
	Key string
	// Own keys live under the configurable domain and are the agent's
	// alone: they are applied with force.
	Own  bool
	Sets []SetName
	// Sources whose failure holds the label at its last good value.
	Sources []Source
	Value   string // what the value means
	Example string
}

// Shared reports whether another tool also writes this key (GPU Feature
// Discovery, AMD's node labeller): such keys are applied without force,
// so a different value owned by that tool is left alone and reported.
func (d *Def) Shared() bool {
	return strings.HasPrefix(d.Key, "nvidia.com/") || strings.HasPrefix(d.Key, "amd.com/")
}

// Pattern reports whether the key ends in a value-dependent suffix.
func (d *Def) Pattern() bool { return strings.HasSuffix(d.Key, ">") }

// FullKey is the key under domain (the documented form for patterns).
func (d *Def) FullKey(domain string) string {
	if d.Own {
		return domain + "/" + d.Key
	}
	return d.Key
}

// prefix is the fixed part of a pattern key, up to and including the dot.
func (d *Def) prefix(domain string) string {
	k := d.FullKey(domain)
	return k[:strings.LastIndex(k, ".<")+1]
}

func (d *Def) in(s SetName) bool { return slices.Contains(d.Sets, s) }

func def(key string, sets []SetName, src []Source, value, example string) *Def {
	return &Def{Key: key, Sets: sets, Sources: src, Value: value, Example: example}
}

func own(key string, src []Source, value, example string) *Def {
	d := def(key, []SetName{GPUNode}, src, value, example)
	d.Own = true
	return d
}

var (
	gpuOnly  = []Source{SourceGPU}
	rdmaOnly = []Source{SourceRDMA}
)

// The gpunode set.
var (
	gpuPresent      = own("gpu.present", gpuOnly, "`true` when the node has GPUs; `false` when the GPU library or driver is absent or finds none and no GPU on PCI is bound to `nvidia` or `amdgpu` (GPUs there that no library can read fail the source: held, never `false`)", "true")
	gpuCount        = own("gpu.count", gpuOnly, "number of GPUs", "8")
	gpuVendor       = own("gpu.vendor", gpuOnly, "`nvidia` or `amd` (of the first GPU)", "nvidia")
	gpuProduct      = own("gpu.product", gpuOnly, "product name as the driver reports it, spaces as `-`", "NVIDIA-H100-80GB-HBM3")
	gpuFamily       = own("gpu.family", gpuOnly, "architecture in lower case (ampere, hopper, blackwell, cdna3, ...)", "hopper")
	gpuMemory       = own("gpu.memory", gpuOnly, "memory of the first GPU in MiB", "81920")
	gpuCompute      = own("gpu.compute", gpuOnly, "CUDA compute capability major.minor (NVIDIA)", "9.0")
	gpuMIGCapable   = own("gpu.mig-capable", gpuOnly, "`true` when the first GPU supports MIG", "true")
	gpuDriver       = own("gpu.driver", gpuOnly, "driver version", "550.54.15")
	gpuCUDA         = own("gpu.cuda", gpuOnly, "highest CUDA version the driver supports (NVIDIA)", "12.4")
	gpuNVLinkActive = own("gpu.nvlink.active-links", gpuOnly, "active NVLink links of the GPU with the fewest; absent when none are up", "18")
	gpuNVLinkGen    = own("gpu.nvlink.generation", gpuOnly, "NVLink generation of the active links (3 A100, 4 H100/H200, 5 B200)", "4")
	gpuClique       = own("gpu.clique", gpuOnly, "multi-node NVLink clique (GB200/GB300 NVL): `<cluster UUID>.<clique id>` from NVML's fabric info, as GFD's `nvidia.com/gpu.clique`; absent until every GPU's fabric registration completed with a non-zero cluster UUID, and when the GPUs disagree (verify's `nvlink-clique` check says which)", "9f2b0c41-7e15-4a3d-8b6e-0123456789ab.32766")
	gpuXGMIActive   = own("gpu.xgmi.active-links", gpuOnly, "active XGMI links of the AMD GPU with the fewest; absent when none are up", "7")
	rdmaPresent     = own("rdma.present", rdmaOnly, "`true` when the node has RDMA devices", "true")
	rdmaDevices     = own("rdma.devices", rdmaOnly, "number of RDMA devices", "8")
	rdmaLinkLayer   = own("rdma.link-layer", rdmaOnly, "`infiniband`, `roce` (or `iwarp`) over the ACTIVE ports; `mixed` when they differ", "infiniband")
	rdmaRate        = own("rdma.rate-gbps", rdmaOnly, "lowest rate of an ACTIVE port in Gb/s", "400")
	rdmaVerified    = own("rdma.verified", rdmaOnly, "`true` when the RDMA probes' last round passed: peer probes check the links and fabric (`probe.thresholds`), loopback probes each HCA and its driver (`probe.loopbackThresholds`; their traffic never meets the link), and with loopback only the links are unverified (RDMAReady reason `LoopbackPassed`); `false` when a probe failed or fell short; absent when probes are off", "true")
	numaNodes       = own("numa.nodes", []Source{SourceTopology}, "number of NUMA nodes", "2")
	gpuNICAligned   = own("topology.gpu-nic-aligned", []Source{SourceGPU, SourceRDMA, SourceTopology}, "`true` when every GPU has an RDMA device with an ACTIVE port on its NUMA node", "true")
	tuningProfile   = own("tuning.profile", []Source{SourceTuning}, "the tuning profile the daemon manages (absent when tuning is off)", "llm-inference")
	tuningState     = own("tuning.state", []Source{SourceTuning}, "`compliant`, `pending` (audit: differs, not applied), `drifted`, `conflict` (irqbalance owns the IRQs), `error`, `unknown` (net.* settings differ and the agent cannot tell whether it is in the host's network namespace), `off`, or `reverted` (`tuning.mode: revert`: every original in the journal restored)", "compliant")
	verified        = own("verified", []Source{SourceVerify}, "`true` when node verification finds no failed check, `false` otherwise (the daemon runs `gpunode-agent verify`'s checks each discovery; see the GPUNodeVerified condition)", "true")
	gpuDirectRDMA   = own("gpudirect-rdma", []Source{SourceGPU, SourceTopology}, "`true` when a NIC can DMA into GPU memory (nvidia_peermem, or dma-buf with the open NVIDIA module on Linux 5.12+); with RDMA probes on, once GPU memory registration was tried, `true` only when each GPU's memory was registered on its nearest NIC (verify's `gpudirect-rdma-works`)", "true")
)

// The llm-d set (RDMA verification by probes and the ROCm version come
// from later features; their gates are documented here already).
var (
	llmdGPUNode    = def("llm-d.ai/gpu-node", []SetName{LLMD}, gpuOnly, "`true` when the node has GPUs", "true")
	llmdGPUType    = def("hardware.llm-d.ai/gpu-type", []SetName{LLMD}, gpuOnly, "lower-case model of the first GPU (h100, h200, b200, a100, mi300x, mi325x, mi350x, ...)", "h100")
	llmdRDMA       = def("hardware.llm-d.ai/rdma", []SetName{LLMD}, rdmaOnly, "`enabled` when an RDMA port is ACTIVE and its verbs device exists, and, with RDMA probes on, `gpunode.dev/rdma.verified` is `true`", "enabled")
	llmdNVLinkGen  = def("node.llm-d.ai/nvlink-generation", []SetName{LLMD}, gpuOnly, "NVLink generation when NVLink links are active (A100 3, H100/H200 4, B200 5)", "4")
	llmdROCm       = def("node.llm-d.ai/rocm-version", []SetName{LLMD}, gpuOnly, "ROCm major.minor on AMD nodes", "7.0")
	amdProductLLMD = def("amd.com/gpu.product", []SetName{LLMD}, gpuOnly, "AMD model (e.g. MI300X)", "MI300X")
)

// The nvidia set: GPU Feature Discovery's keys and value formats, as its
// README ("Generated Labels") and internal/lm in NVIDIA/k8s-device-plugin
// define them. nvidia.com/gpu.product is shared with the llm-d set.
var (
	nvProduct    = def("nvidia.com/gpu.product", []SetName{LLMD, NVIDIA}, gpuOnly, "GFD's product format: characters other than letters, digits, `-_.` and space dropped, spaces as `-`", "NVIDIA-H100-80GB-HBM3")
	nvCount      = def("nvidia.com/gpu.count", []SetName{NVIDIA}, gpuOnly, "number of GPUs of that product", "8")
	nvMemory     = def("nvidia.com/gpu.memory", []SetName{NVIDIA}, gpuOnly, "memory per GPU in MiB", "81559")
	nvFamily     = def("nvidia.com/gpu.family", []SetName{NVIDIA}, gpuOnly, "GFD's family from the compute capability (ampere, ada-lovelace, hopper, blackwell, ...)", "hopper")
	nvCompMajor  = def("nvidia.com/gpu.compute.major", []SetName{NVIDIA}, gpuOnly, "compute capability major", "9")
	nvCompMinor  = def("nvidia.com/gpu.compute.minor", []SetName{NVIDIA}, gpuOnly, "compute capability minor", "0")
	nvDrvMajor   = def("nvidia.com/cuda.driver-version.major", []SetName{NVIDIA}, gpuOnly, "driver version, first part", "550")
	nvDrvMinor   = def("nvidia.com/cuda.driver-version.minor", []SetName{NVIDIA}, gpuOnly, "driver version, second part", "54")
	nvDrvRev     = def("nvidia.com/cuda.driver-version.revision", []SetName{NVIDIA}, gpuOnly, "driver version, third part (absent for two-part versions, where GFD writes an empty value)", "15")
	nvDrvFull    = def("nvidia.com/cuda.driver-version.full", []SetName{NVIDIA}, gpuOnly, "driver version", "550.54.15")
	nvCUDAMajor  = def("nvidia.com/cuda.runtime-version.major", []SetName{NVIDIA}, gpuOnly, "CUDA version the driver supports, major", "12")
	nvCUDAMinor  = def("nvidia.com/cuda.runtime-version.minor", []SetName{NVIDIA}, gpuOnly, "CUDA version the driver supports, minor", "4")
	nvCUDAFull   = def("nvidia.com/cuda.runtime-version.full", []SetName{NVIDIA}, gpuOnly, "CUDA version the driver supports, major.minor", "12.4")
	nvClique     = def("nvidia.com/gpu.clique", []SetName{NVIDIA}, gpuOnly, "GFD's clique label (internal/lm/imex.go): `<cluster UUID>.<clique id>` when the fabric-attached GPUs agree", "9f2b0c41-7e15-4a3d-8b6e-0123456789ab.32766")
	nvMachine    = def("nvidia.com/gpu.machine", []SetName{NVIDIA}, gpuOnly, "DMI product name (/sys/class/dmi/id/product_name) in GFD's product format; `unknown` where the host has none, as GFD writes", "DGXH100")
	nvMIGCapable = def("nvidia.com/mig.capable", []SetName{NVIDIA}, gpuOnly, "`true` when any GPU supports MIG", "true")
)

// The amd set: AMD GPU node labeller keys (ROCm/k8s-device-plugin,
// cmd/k8s-node-labeller). When the GPUs of a node disagree on a value, the
// labeller writes one counter key per value instead (<key>.<value>=<count>);
// so do we.
var (
	amdFamily        = def("amd.com/gpu.family", []SetName{AMD}, gpuOnly, "amdgpu family acronym (AI for CDNA: MI100 to MI350; other architectures are left out)", "AI")
	amdDeviceID      = def("amd.com/gpu.device-id", []SetName{AMD}, gpuOnly, "PCI device id in hex without 0x", "74a1")
	amdDeviceIDN     = def("amd.com/gpu.device-id.<id>", []SetName{AMD}, gpuOnly, "GPUs of each device id, when they differ", "4")
	amdProductName   = def("amd.com/gpu.product-name", []SetName{AMD}, gpuOnly, "product name, spaces as `_`, parentheses dropped", "AMD_Instinct_MI300X")
	amdProductNameN  = def("amd.com/gpu.product-name.<name>", []SetName{AMD}, gpuOnly, "GPUs of each product name, when they differ", "4")
	amdVRAM          = def("amd.com/gpu.vram", []SetName{AMD}, gpuOnly, "VRAM per GPU in GiB, rounded, with a G", "192G")
	amdVRAMN         = def("amd.com/gpu.vram.<size>", []SetName{AMD}, gpuOnly, "GPUs of each VRAM size, when they differ", "4")
	amdDriverVersion = def("amd.com/gpu.driver-version", []SetName{AMD}, gpuOnly, "amdgpu driver version", "6.10.5")
)

// AMD keys that need what AMD SMI or the KFD topology report.
var (
	amdCUCount   = def("amd.com/gpu.cu-count", []SetName{AMD}, gpuOnly, "compute units per GPU", "304")
	amdCUCountN  = def("amd.com/gpu.cu-count.<n>", []SetName{AMD}, gpuOnly, "GPUs of each compute unit count, when they differ", "4")
	gpuPartition = own("gpu.partition", gpuOnly, "compute and memory partition modes of the first GPU (AMD), lower case", "spx_nps1")
)

// Defs lists every label the agent can write, in README order.
var Defs = []*Def{
	gpuPresent, gpuCount, gpuVendor, gpuProduct, gpuFamily, gpuMemory, gpuCompute, gpuMIGCapable,
	gpuDriver, gpuCUDA, gpuNVLinkActive, gpuNVLinkGen, gpuClique, gpuXGMIActive, gpuPartition,
	rdmaPresent, rdmaDevices, rdmaLinkLayer, rdmaRate, rdmaVerified, gpuDirectRDMA, numaNodes, gpuNICAligned,
	tuningProfile, tuningState, verified,
	llmdGPUNode, llmdGPUType, llmdRDMA, llmdNVLinkGen, llmdROCm, nvProduct, amdProductLLMD,
	nvCount, nvMemory, nvFamily, nvCompMajor, nvCompMinor,
	nvDrvMajor, nvDrvMinor, nvDrvRev, nvDrvFull, nvCUDAMajor, nvCUDAMinor, nvCUDAFull, nvMIGCapable, nvClique, nvMachine,
	amdFamily, amdDeviceID, amdDeviceIDN, amdProductName, amdProductNameN,
	amdVRAM, amdVRAMN, amdDriverVersion, amdCUCount, amdCUCountN,
}

// Lookup finds the Def of a full label key under domain, or nil.
func Lookup(key, domain string) *Def {
	for _, d := range Defs {
		if d.Pattern() {
			if p := d.prefix(domain); strings.HasPrefix(key, p) && len(key) > len(p) {
				return d
			}
			continue
		}
		if d.FullKey(domain) == key {
			return d
		}
	}
	return nil
}
