package nvmlfake

import (
	"fmt"
	"math"
	"regexp"
	"strconv"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// migSlots is how many MIG devices a GPU can hold (seven 1g instances).
const migSlots = 7

// migProfile is a MIG profile name as NVIDIA writes it: "<slices>g.<GB>gb".
var migProfile = regexp.MustCompile(`^([1-7])g\.([0-9]{1,3})gb$`)

// migDevice is one MIG device of a GPU: a compute instance of a GPU
// instance, as the device plugin hands them out. Compute instances of one
// GPU instance share its memory and its activity (GPM samples a GPU
// instance). Methods the agent does not call fall through to go-nvml's
// mock, which panics on them.
type migDevice struct {
	*mock.Device
	parent  *device
	gi, ci  int
	uuid    string
	profile string
	memory  uint64
	phase   float64
}

var _ gonvml.Device = (*migDevice)(nil)

// newMIGDevices lays out the instances of a MIG-enabled GPU in order;
// they must fit in its seven slices and its memory. A GPU instance split
// into n compute instances gives n MIG devices named "<slices/n>c.<profile>".
func (f *machine) newMIGDevices(d *device, seed string) error {
	slices, mem := 0, uint64(0)
	if len(d.spec.MIGComputeInstances) > len(d.spec.MIG) {
		return fmt.Errorf("compute instances %v for %d GPU instances", d.spec.MIGComputeInstances, len(d.spec.MIG))
	}
	for i, p := range d.spec.MIG {
		m := migProfile.FindStringSubmatch(p)
		if m == nil {
			return fmt.Errorf("MIG profile %q is not like 1g.10gb", p)
		}
		n, _ := strconv.Atoi(m[1])
		gb, _ := strconv.Atoi(m[2])
		slices += n
		mem += uint64(gb) << 30
		cis := 1
		if i < len(d.spec.MIGComputeInstances) && d.spec.MIGComputeInstances[i] > 0 {
			cis = d.spec.MIGComputeInstances[i]
		}
		if n%cis != 0 {
			return fmt.Errorf("GPU instance %s cannot hold %d equal compute instances", p, cis)
		}
		profile := p
		if cis > 1 {
			profile = fmt.Sprintf("%dc.%s", n/cis, p)
		}
		// The GPU instance's load curve starts where its first device's
		// UUID digest puts it.
		phase := float64(digest("mig", seed, d.index*migSlots+len(d.mig))[0]) / 256 * 2 * math.Pi
		for ci := range cis {
			h := digest("mig", seed, d.index*migSlots+len(d.mig))
			d.mig = append(d.mig, &migDevice{Device: &mock.Device{}, parent: d, gi: i + 1, ci: ci,
				uuid:    fmt.Sprintf("MIG-%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16]),
				profile: profile, memory: uint64(gb) << 30, phase: phase})
		}
	}
	if slices > migSlots || mem > d.MemoryInfo.Total || len(d.mig) > migSlots {
		return fmt.Errorf("MIG instances %v need %d slices, %d GiB and %d devices, the GPU has %d, %d GiB and %d",
			d.spec.MIG, slices, mem>>30, len(d.mig), migSlots, d.MemoryInfo.Total>>30, migSlots)
	}
	return nil
}

func (d *device) GetMaxMigDeviceCount() (int, gonvml.Return) {
	return answer(d.f, "nvmlDeviceGetMaxMigDeviceCount", d, func() int { return migSlots })
}

func (d *device) GetMigDeviceHandleByIndex(i int) (gonvml.Device, gonvml.Return) {
	if ret := d.f.enter("nvmlDeviceGetMigDeviceHandleByIndex", d); ret != gonvml.SUCCESS {
		return nil, ret
	}
	switch {
	case !d.migEnabled():
		return nil, gonvml.ERROR_INVALID_ARGUMENT
	case i < 0 || i >= migSlots:
		return nil, gonvml.ERROR_INVALID_ARGUMENT
	case i >= len(d.mig):
		return nil, gonvml.ERROR_NOT_FOUND
	}
	return d.mig[i], gonvml.SUCCESS
}

// migEnabled reads the MIG mode the mock's SetMigMode may change.
func (d *device) migEnabled() bool {
	d.RLock()
	defer d.RUnlock()
	return d.MigMode == gonvml.DEVICE_MIG_ENABLE
}

// load is the instance's own load curve.
func (m *migDevice) load(t float64) float64 { return loadMean + loadSwing*math.Sin(omega*t+m.phase) }

func (m *migDevice) loadIntegral(t float64) float64 {
	return loadMean*t + loadSwing/omega*(math.Cos(m.phase)-math.Cos(omega*t+m.phase))
}

func (m *migDevice) GetUUID() (string, gonvml.Return) {
	return answer(m.parent.f, "nvmlDeviceGetUUID", m.parent, func() string { return m.uuid })
}

func (m *migDevice) GetName() (string, gonvml.Return) {
	return answer(m.parent.f, "nvmlDeviceGetName", m.parent, func() string { return m.parent.Config.Name + " MIG " + m.profile })
}

func (m *migDevice) GetGpuInstanceId() (int, gonvml.Return) {
	return answer(m.parent.f, "nvmlDeviceGetGpuInstanceId", m.parent, func() int { return m.gi })
}

func (m *migDevice) GetComputeInstanceId() (int, gonvml.Return) {
	return answer(m.parent.f, "nvmlDeviceGetComputeInstanceId", m.parent, func() int { return m.ci })
}

func (m *migDevice) IsMigDeviceHandle() (bool, gonvml.Return) {
	return answer(m.parent.f, "nvmlDeviceIsMigDeviceHandle", m.parent, func() bool { return true })
}

func (m *migDevice) GetDeviceHandleFromMigDeviceHandle() (gonvml.Device, gonvml.Return) {
	return answer(m.parent.f, "nvmlDeviceGetDeviceHandleFromMigDeviceHandle", m.parent, func() gonvml.Device { return m.parent })
}

func (m *migDevice) GetMemoryInfo() (gonvml.Memory, gonvml.Return) {
	return answer(m.parent.f, "nvmlDeviceGetMemoryInfo", m.parent, func() gonvml.Memory {
		used := uint64(float64(m.memory)*(0.1+0.8*m.load(m.parent.f.now()))) &^ (1<<20 - 1)
		return gonvml.Memory{Total: m.memory, Used: used, Free: m.memory - used}
	})
}

// GpmMigSampleGet takes a GPM sample of one GPU instance.
func (d *device) GpmMigSampleGet(gi int, sample gonvml.GpmSample) gonvml.Return {
	if ret := d.f.enter("nvmlGpmMigSampleGet", d); ret != gonvml.SUCCESS {
		return ret
	}
	s, ok := sample.(*gpmSample)
	if !ok || s.f != d.f || !d.f.spec.gpm {
		return gonvml.ERROR_INVALID_ARGUMENT
	}
	var inst *migDevice
	for _, m := range d.mig {
		if m.gi == gi {
			inst = m
		}
	}
	if inst == nil || !d.migEnabled() {
		return gonvml.ERROR_NOT_FOUND
	}
	d.f.mu.Lock()
	defer d.f.mu.Unlock()
	if s.freed {
		return gonvml.ERROR_INVALID_ARGUMENT
	}
	s.dev, s.mig, s.t = d, inst, d.f.now()
	return gonvml.SUCCESS
}
