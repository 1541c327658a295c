package probe

import (
	"errors"
	"fmt"
	"slices"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/rdma/verbs"
)

// DefaultGPUMemoryBytes bounds the GPU memory one probe end allocates
// when the caller sets no bound: a GPU may be serving a model, and a
// probe only borrows a little of its memory.
const DefaultGPUMemoryBytes = 4 << 20

// GPUTarget is the GPU a probe's buffers live on (Request.GPU).
type GPUTarget struct {
	// Index is the GPU's index in the snapshot (-1 when it is not there);
	// PCIBusID picks it for the driver.
	Index    int    `json:"index"`
	PCIBusID string `json:"pci_bus_id"`
	// Vendor is gpu.NVIDIA or gpu.AMD ("" is taken as NVIDIA): NVIDIA
	// memory comes from the CUDA driver, AMD memory from ROCm's HSA
	// runtime.
	Vendor gpu.Vendor `json:"vendor,omitempty"`
	// Library is the vendor's library: the CUDA driver library
	// (verbs.CUDALibrary when empty) or the HSA runtime
	// (verbs.HSALibrary when empty).
	Library string `json:"-"`
	// MaxBytes bounds each allocation (DefaultGPUMemoryBytes when 0).
	MaxBytes int `json:"-"`
}

// GPUResult says on which GPU a probe's buffers lived and how the NIC
// registered them.
type GPUResult struct {
	Index    int    `json:"index"`
	PCIBusID string `json:"pci_bus_id"`
	// Path is verbs.PathDMABuf or verbs.PathPeerMem.
	Path string `json:"path"`
	// DMABuf says why the memory was not registered as a dma-buf, when it
	// was not: no export (the driver's reason) or the NIC's refusal.
	DMABuf string `json:"dmabuf_unavailable,omitempty"`
}

// ErrGPUNotAvailable: this agent cannot probe the GPU's memory at all
// (an AMD GPU without ROCm's HSA runtime, or another vendor's GPU), which
// is not a failure of the GPU or the NIC.
var ErrGPUNotAvailable = errors.New("not available")

// ErrGPUVendor: GPU memory probes exist for NVIDIA and AMD GPUs only.
var ErrGPUVendor = fmt.Errorf("%w: GPU memory probes exist for NVIDIA and AMD GPUs only", ErrGPUNotAvailable)

// errNoGPU: a GPU memory probe without this end's GPU.
var errNoGPU = errors.New("GPU memory needs a GPU")

// gpuBuffers allocates GPU memory for each config's buffer and returns
// the configs that register it, and a release for the memory (to call
// after the QPs are closed).
func gpuBuffers(g *GPUTarget, cfgs ...verbs.QPConfig) ([]verbs.QPConfig, func(), error) {
	if g == nil {
		return nil, func() {}, errNoGPU
	}
	alloc := func(size int) (*verbs.GPUMemory, error) {
		return verbs.AllocGPUMemory(verbs.GPUMemoryConfig{Library: g.Library, PCIBusID: g.PCIBusID, Size: size})
	}
	switch g.Vendor {
	case "", gpu.NVIDIA:
	case gpu.AMD:
		alloc = func(size int) (*verbs.GPUMemory, error) {
			m, err := verbs.AllocAMDGPUMemory(verbs.AMDGPUMemoryConfig{Library: g.Library, PCIBusID: g.PCIBusID, Size: size})
			if errors.Is(err, verbs.ErrNoHSA) {
				// ROCm is optional on an AMD node: without its runtime
				// there is nothing to probe, which is not a failure.
				err = fmt.Errorf("%w: %w", ErrGPUNotAvailable, err)
			}
			return m, err
		}
	default:
		return nil, func() {}, fmt.Errorf("GPU %d (%s): %w", g.Index, g.Vendor, ErrGPUVendor)
	}
	limit := g.MaxBytes
	if limit <= 0 {
		limit = DefaultGPUMemoryBytes
	}
	var mems []*verbs.GPUMemory
	release := func() {
		for _, m := range mems {
			m.Close()
		}
	}
	out := make([]verbs.QPConfig, len(cfgs))
	for i, cfg := range cfgs {
		if cfg.BufferSize > limit {
			release()
			return nil, func() {}, fmt.Errorf("the probe needs %d bytes of GPU memory per queue pair, more than the %d allowed (probe.gpuMemoryBytes)", cfg.BufferSize, limit)
		}
		m, err := alloc(cfg.BufferSize)
		if err != nil {
			release()
			return nil, func() {}, fmt.Errorf("GPU %d: %w", g.Index, err)
		}
		mems = append(mems, m)
		out[i] = cfg
		out[i].GPU = m
	}
	return out, release, nil
}

// gpuResult describes how qp's GPU memory was registered.
func gpuResult(g GPUTarget, qp *verbs.QP, m *verbs.GPUMemory) *GPUResult {
	r := &GPUResult{Index: g.Index, PCIBusID: g.PCIBusID, Path: qp.MemoryPath(), DMABuf: qp.DMABufRefused()}
	if ok, why := m.DMABuf(); !ok {
		r.DMABuf = "no dma-buf: " + why
	}
	return r
}

// GPURegistration is one attempt to register a GPU's memory on the
// GPU's nearest RDMA port: what the gpudirect-rdma-works check judges.
type GPURegistration struct {
	GPU GPUTarget `json:"gpu"`
	// Port is the port tried; nil when the GPU has no usable port near it.
	Port *Port `json:"port,omitempty"`
	// Registered: the NIC registered the GPU memory (Result.Path says how).
	Registered bool       `json:"registered"`
	Result     *GPUResult `json:"result,omitempty"`
	// Error says why it was not registered; NotAvailable, that this
	// agent cannot probe the GPU's memory at all (ErrGPUNotAvailable).
	Error        string `json:"error,omitempty"`
	NotAvailable bool   `json:"not_available,omitempty"`
}

// RegisterGPU allocates a little of g's memory and registers it on p (a
// protection domain, the memory region, a QP as a probe makes), then
// frees everything. p nil records the GPU side alone: the allocation and
// dma-buf export run, and the attempt fails for want of a port.
func RegisterGPU(g GPUTarget, p *Port, noPort string) GPURegistration {
	out := GPURegistration{GPU: g, Port: p}
	cfgs, release, err := gpuBuffers(&g, verbs.QPConfig{BufferSize: 64 << 10, Depth: 16, NUMANode: -1})
	if err != nil {
		out.Error, out.NotAvailable = err.Error(), errors.Is(err, ErrGPUNotAvailable)
		return out
	}
	defer release()
	if p == nil {
		m := cfgs[0].GPU
		ok, why := m.DMABuf()
		out.Error = fmt.Sprintf("GPU memory allocated (%d bytes; dma-buf %s) but %s", m.Size(), map[bool]string{true: "exported", false: "not exported: " + why}[ok], noPort)
		return out
	}
	dev, err := verbs.OpenDevice(p.Device)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	defer dev.Close()
	cfg := cfgs[0]
	cfg.Port, cfg.GIDIndex, cfg.PSN = p.Port, p.GIDIndex, randomPSN()
	qp, err := dev.NewQP(cfg)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	defer qp.Close()
	out.Registered = true
	out.Result = gpuResult(g, qp, cfg.GPU)
	return out
}

// GPUPair is a GPU and the RDMA device nearest it, from the snapshot's
// GPU-NIC affinity.
type GPUPair struct {
	GPU GPUTarget `json:"gpu"`
	// Device is the nearest RDMA device with an ACTIVE port; empty when
	// there is none, and NoDevice says why.
	Device   string `json:"device,omitempty"`
	NoDevice string `json:"no_device,omitempty"`
}

// RegisterGPUs makes one registration attempt per pair, each on the first
// usable port of the pair's device, with at most maxBytes of GPU memory
// (DefaultGPUMemoryBytes when 0).
func RegisterGPUs(pairs []GPUPair, devs []rdma.Device, maxBytes int) []GPURegistration {
	ports := Ports(devs)
	out := make([]GPURegistration, 0, len(pairs))
	for _, pr := range pairs {
		g := pr.GPU
		g.MaxBytes = maxBytes
		if pr.Device == "" {
			out = append(out, RegisterGPU(g, nil, pr.NoDevice))
			continue
		}
		i := slices.IndexFunc(ports, func(p Port) bool { return p.Device == pr.Device })
		if i < 0 {
			out = append(out, RegisterGPU(g, nil, fmt.Sprintf("its nearest RDMA device %s has no port a probe can use (ACTIVE, with a routable RoCE v2 address on RoCE)", pr.Device)))
			continue
		}
		out = append(out, RegisterGPU(g, &ports[i], ""))
	}
	return out
}

// GPUForPort is the GPU that answers GPU memory probes on port: the one
// whose nearest RDMA device is port's (the first, where several are),
// with at most maxBytes of its memory per probe (0 refuses).
func GPUForPort(pairs []GPUPair, port Port, maxBytes int) (*GPUTarget, error) {
	if maxBytes == 0 {
		return nil, errors.New("this agent touches no GPU memory (probe.gpuMemoryBytes is 0)")
	}
	for _, p := range pairs {
		if p.Device == port.Device {
			g := p.GPU
			g.MaxBytes = maxBytes
			return &g, nil
		}
	}
	return nil, fmt.Errorf("no GPU of this node has %s as its nearest RDMA device", port.Device)
}
