package gpu

import (
	"context"
	"time"
)

// Sampler is implemented by backends that read live values. The agent's
// background sampler calls it on an interval and caches the result; a
// metrics scrape never calls it.
type Sampler interface {
	// Sample reads every GPU the backend has seen, in index order. A GPU
	// that does not answer is still returned, with Up false and the reason
	// on Errors, so that only its own series go down. The error joins the
	// per-GPU problems; with the library or driver missing it satisfies
	// errors.Is(err, source.ErrAbsent) and no samples are returned. GPUs
	// the process may not open (Inventory.NotVisible) are left out.
	Sample(ctx context.Context) ([]Sample, error)
}

// EventWatcher is implemented by backends that report device events (XIDs
// on NVIDIA). WatchEvents blocks until ctx is done, calling emit for each
// event from one goroutine; it returns ctx's error, or another error when
// events cannot be watched at all.
type EventWatcher interface {
	WatchEvents(ctx context.Context, emit func(Event)) error
}

// EventWatchReporter is implemented by event watchers that can say which
// GPUs they watch: a GPU they do not watch has its events missed.
type EventWatchReporter interface {
	// EventWatch reports each GPU in index order; nil while the watcher
	// has not run or its library is absent. It never blocks on a device.
	EventWatch() []EventWatchState
}

// EventWatchState says whether a GPU's events are watched, and if not why.
type EventWatchState struct {
	GPU     int
	UUID    string
	Watched bool
	Reason  string
}

// EventKind names what an Event reports.
type EventKind string

// XID is an NVIDIA Xid error: Code is the Xid number.
const XID EventKind = "xid"

// Event is a device event.
type Event struct {
	Time time.Time
	// GPU is the index of the GPU the event is for; UUID names it.
	GPU  int
	UUID string
	Kind EventKind
	Code uint64
}

// Interconnect kinds.
const (
	NVLink = "nvlink"
	XGMI   = "xgmi"
)

// Sample is one reading of a GPU. Every measured field is optional: nil means
// the device does not support it or did not answer, which is different from
// a reading of 0. Counters hold the device's own running totals; the agent's
// sampler keeps them monotonic across device resets.
type Sample struct {
	// Identity, kept from the last time the GPU answered, so a GPU that
	// stops answering is still named on its "down" series.
	Index    int    `json:"index"`
	UUID     string `json:"uuid"`
	PCIBusID string `json:"pci_bus_id"` // sysfs form, "0000:1b:00.0"
	Product  string `json:"product"`
	// DeviceNode is the GPU's /dev node without /dev/ ("nvidia0"), if known.
	DeviceNode string `json:"device_node,omitempty"`

	Time time.Time `json:"time"`
	// Up is true when the GPU answered this round.
	Up bool `json:"up"`
	// Lost is true when the GPU fell off the bus (NVML ERROR_GPU_IS_LOST).
	Lost   bool     `json:"lost,omitempty"`
	Errors []string `json:"errors,omitempty"`

	// Ratios in [0, 1].
	Utilization       *float64 `json:"utilization,omitempty"`
	MemoryUtilization *float64 `json:"memory_utilization,omitempty"`

	// MemoryUsedBytes is memory allocated by applications; it excludes
	// MemoryReservedBytes, what the driver and firmware set aside, where
	// the backend reports that apart (NVML's nvmlDeviceGetMemoryInfo_v2,
	// as nvidia-smi and DCGM read it). Used, free and reserved add up to
	// the total.
	MemoryUsedBytes     *uint64 `json:"memory_used_bytes,omitempty"`
	MemoryFreeBytes     *uint64 `json:"memory_free_bytes,omitempty"`
	MemoryReservedBytes *uint64 `json:"memory_reserved_bytes,omitempty"`
	MemoryTotalBytes    *uint64 `json:"memory_total_bytes,omitempty"`

	PowerWatts      *float64 `json:"power_watts,omitempty"`
	PowerLimitWatts *float64 `json:"power_limit_watts,omitempty"`
	// EnergyMillijoules is a counter: energy since the driver loaded.
	EnergyMillijoules *uint64 `json:"energy_millijoules,omitempty"`

	Temperatures []Temperature `json:"temperatures,omitempty"`
	Clocks       []Clock       `json:"clocks,omitempty"`
	// ClockEventReasons lists every reason the backend knows with whether
	// it holds clocks down now; nil when the device cannot say.
	ClockEventReasons []ClockEventReason `json:"clock_event_reasons,omitempty"`

	PCIe         *PCIeSample         `json:"pcie,omitempty"`
	Interconnect *InterconnectSample `json:"interconnect,omitempty"`
	// ECC lists the memory error counters the device keeps.
	ECC          []ECCCount    `json:"ecc,omitempty"`
	RemappedRows *RemappedRows `json:"remapped_rows,omitempty"`
	// Profiling holds engine activity (NVML GPM on Hopper and newer).
	Profiling *Profiling `json:"profiling,omitempty"`
	// MIG lists the instances of a GPU partitioned with Multi-Instance
	// GPU, in index order; a GPU in MIG mode reports its activity here.
	MIG []MIGInstance `json:"mig,omitempty"`
	// Processes are the processes on the GPU in pid order; on a GPU in
	// MIG mode each is on its MIG instance instead. Nil when the backend
	// cannot list processes.
	Processes []Process `json:"processes,omitempty"`
}

// MIGInstance is one MIG device: a GPU instance and a compute instance.
type MIGInstance struct {
	GPUInstanceID     int `json:"gpu_instance_id"`
	ComputeInstanceID int `json:"compute_instance_id"`
	// UUID is the MIG device's ("MIG-..."), which device plugins allocate.
	UUID string `json:"uuid"`
	// Profile is the instance's profile ("1g.10gb", "3g.40gb").
	Profile          string     `json:"profile"`
	MemoryUsedBytes  *uint64    `json:"memory_used_bytes,omitempty"`
	MemoryFreeBytes  *uint64    `json:"memory_free_bytes,omitempty"`
	MemoryTotalBytes *uint64    `json:"memory_total_bytes,omitempty"`
	Profiling        *Profiling `json:"profiling,omitempty"`
	Processes        []Process  `json:"processes,omitempty"`
}

// Temperature sensors. On AMD GPUs "gpu" is the junction (hotspot)
// sensor and "edge" the edge sensor, which MI300 and newer lack.
const (
	SensorGPU    = "gpu"
	SensorMemory = "memory"
	SensorEdge   = "edge"
)

// Temperature is one sensor's reading.
type Temperature struct {
	Sensor  string  `json:"sensor"`
	Celsius float64 `json:"celsius"`
}

// Clock domains.
const (
	ClockGraphics = "graphics"
	ClockSM       = "sm"
	ClockMemory   = "memory"
	ClockVideo    = "video"
)

// Clock is one clock domain's current frequency.
type Clock struct {
	Clock string  `json:"clock"`
	Hertz float64 `json:"hertz"`
}

// ClockEventReason is one reason clocks may be held below their maximum
// ("sw_power_cap", "hw_thermal_slowdown", "gpu_idle", ...).
type ClockEventReason struct {
	Reason string `json:"reason"`
	Active bool   `json:"active"`
}

// PCIeSample is the GPU's PCIe link now. Byte and replay counters are
// running totals.
type PCIeSample struct {
	TransmitBytes *uint64 `json:"transmit_bytes,omitempty"`
	ReceiveBytes  *uint64 `json:"receive_bytes,omitempty"`
	ReplayErrors  *uint64 `json:"replay_errors,omitempty"`
	// ByteCounterBits and ReplayCounterBits are the widths the device
	// keeps the counters in (0 means 64): a smaller value after a larger
	// one near the top of that range is a wrap, not a reset.
	ByteCounterBits   uint8 `json:"-"`
	ReplayCounterBits uint8 `json:"-"`
	LinkGeneration    *int  `json:"link_generation,omitempty"`
	LinkWidth         *int  `json:"link_width,omitempty"`
	// TransmitBytesPerSecond and ReceiveBytesPerSecond are the rate the
	// device measured over a short window, for a direction whose byte
	// counter is absent or too narrow to make a total of.
	TransmitBytesPerSecond *float64 `json:"transmit_bytes_per_second,omitempty"`
	ReceiveBytesPerSecond  *float64 `json:"receive_bytes_per_second,omitempty"`
}

// InterconnectSample is the GPU-to-GPU links (NVLink, XGMI) now.
type InterconnectSample struct {
	// Kind is NVLink or XGMI.
	Kind  string `json:"kind"`
	Links []Link `json:"links"`
	// Errors are running totals over all links, by type ("crc_flit",
	// "crc_data", "replay", "recovery", "ecc_data" before NVLink 5;
	// "symbol", "effective", "recovery", ... on NVLink 5), sorted by type.
	Errors []ErrorCount `json:"errors,omitempty"`
}

// ActiveLinks counts the links that are up.
func (s *InterconnectSample) ActiveLinks() int {
	n := 0
	for _, l := range s.Links {
		if l.Up {
			n++
		}
	}
	return n
}

// Link is one interconnect link; byte counters are running totals of data
// (payload) traffic.
type Link struct {
	Number        int     `json:"number"`
	Up            bool    `json:"up"`
	TransmitBytes *uint64 `json:"transmit_bytes,omitempty"`
	ReceiveBytes  *uint64 `json:"receive_bytes,omitempty"`
}

// ErrorCount is a running total of errors of one type.
type ErrorCount struct {
	Type  string `json:"type"`
	Count uint64 `json:"count"`
}

// ECC error types and counter scopes.
const (
	ECCCorrected   = "corrected"
	ECCUncorrected = "uncorrected"
	// ECCVolatile counts since the driver loaded; ECCAggregate over the
	// GPU's life.
	ECCVolatile  = "volatile"
	ECCAggregate = "aggregate"
)

// ECCCount is one memory error counter.
type ECCCount struct {
	Type  string `json:"type"`
	Scope string `json:"scope"`
	// Count is the exported counter: the agent's sampler keeps it
	// monotonic across driver reloads and GPU resets.
	Count uint64 `json:"count"`
	// Current is the device's own reading this round, which the sampler
	// sets before it makes Count monotonic: a volatile count that the
	// driver restarted at zero reads 0 here while Count goes on. Health
	// judges this one.
	Current uint64 `json:"current"`
}

// RemappedRows is the HBM row remapping state (Ampere and newer).
type RemappedRows struct {
	Correctable   uint64 `json:"correctable"`
	Uncorrectable uint64 `json:"uncorrectable"`
	// Pending is true when a remap waits for a GPU reset.
	Pending bool `json:"pending"`
	// Failed is true when a remap failed: the GPU needs service.
	Failed bool `json:"failed"`
}

// Profiling is engine activity over the last sampling interval, as ratios
// in [0, 1].
type Profiling struct {
	GraphicsActive *float64 `json:"graphics_active,omitempty"`
	SMActive       *float64 `json:"sm_active,omitempty"`
	SMOccupancy    *float64 `json:"sm_occupancy,omitempty"`
	TensorActive   *float64 `json:"tensor_active,omitempty"`
	DRAMActive     *float64 `json:"dram_active,omitempty"`
}
