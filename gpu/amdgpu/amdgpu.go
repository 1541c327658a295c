// Package amdgpu is the AMD GPU backend that needs no library: it reads
// the amdgpu kernel driver's sysfs attributes, hwmon sensors, the KFD
// topology and the binary gpu_metrics table under the host root. The agent
// uses it when AMD SMI (gpu/amdsmi) cannot be loaded.
package amdgpu

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/internal/source"
)

const (
	drmClass = "/sys/class/drm"
	amdPCI   = "0x1002"
)

// Backend implements gpu.Backend and gpu.Sampler over amdgpu sysfs.
type Backend struct {
	fs  hostfs.FS
	now func() time.Time

	mu    sync.Mutex
	cards map[string]*cardState // by PCI bus id

	// insteadOf says why this backend reads what AMD SMI would, when the
	// node has an AMD SMI library we cannot use; "" otherwise.
	insteadOf string
}

var (
	_ gpu.Backend = (*Backend)(nil)
	_ gpu.Sampler = (*Backend)(nil)
)

// Option configures a Backend.
type Option func(*Backend)

// WithClock stamps samples with now instead of time.Now.
func WithClock(now func() time.Time) Option { return func(b *Backend) { b.now = now } }

// WithInsteadOf says the node has AMD SMI but it could not be used, and
// why: samples then report the source degraded with the reason, since
// sysfs lacks some of what the library reads.
func WithInsteadOf(why string) Option { return func(b *Backend) { b.insteadOf = why } }

// New returns a backend reading the host filesystem fsys.
func New(fsys hostfs.FS, opts ...Option) *Backend {
	b := &Backend{fs: fsys, now: time.Now, cards: map[string]*cardState{}}
	for _, o := range opts {
		o(b)
	}
	return b
}

// Name identifies the backend in source status.
func (b *Backend) Name() string { return source.AMDGPU }

// Close releases nothing: sysfs needs no session.
func (b *Backend) Close() error { return nil }

// card is one amdgpu DRM card.
type card struct {
	name  string  // "card1"
	dev   string  // host path of its PCI device directory
	addr  pciAddr // its PCI address
	busID string  // addr as text: "0000:05:00.0"
}

// listCards finds the amdgpu cards, in card number order. Cards of other
// drivers (the BMC's VGA card on most servers) and of no PCI device (the
// amdgpu_xcp platform devices of compute partitions) are left out.
func (b *Backend) listCards() ([]card, error) {
	if !b.fs.Exists("/sys/module/amdgpu") {
		return nil, source.NewAbsent("amdgpu kernel driver is not loaded")
	}
	names, err := b.fs.Names(drmClass)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, source.NewAbsent("no %s", drmClass)
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", drmClass, err)
	}
	type numbered struct {
		n int
		c card
	}
	var found []numbered
	var errs []error
	for _, name := range names {
		n, ok := cardIndex(name)
		if !ok {
			continue
		}
		dev, err := b.fs.Resolve(path.Join(drmClass, name, "device"))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		vendor, _ := b.fs.ReadString(dev + "/vendor")
		if vendor != amdPCI {
			continue
		}
		if drv, err := b.fs.LinkBase(dev + "/driver"); err != nil || drv != "amdgpu" {
			continue
		}
		addr, err := b.pciAddress(dev)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s refused: %w", name, err))
			continue
		}
		found = append(found, numbered{n, card{name: name, dev: dev, addr: addr, busID: addr.String()}})
	}
	slices.SortFunc(found, func(a, b numbered) int { return a.n - b.n })
	cards := make([]card, len(found))
	for i, f := range found {
		cards[i] = f.c
	}
	if len(cards) == 0 && len(errs) == 0 {
		return nil, source.NewAbsent("no amdgpu cards under %s", drmClass)
	}
	return cards, errors.Join(errs...)
}

// pciAddress is the PCI address of a card's device directory. The kernel
// links card<N>/device to the PCI device, whose directory is named by its
// address; copies of sysfs (and some container runtimes' bind mounts) have
// a plain directory named "device" there instead, and then the uevent's
// PCI_SLOT_NAME says which device it is. A card with neither is refused.
func (b *Backend) pciAddress(dev string) (pciAddr, error) {
	if a, err := parsePCIAddr(path.Base(dev)); err == nil {
		return a, nil
	}
	s, err := b.fs.ReadString(dev + "/uevent")
	if err != nil {
		return pciAddr{}, fmt.Errorf("%s is not a PCI device directory and its uevent cannot be read: %w", dev, err)
	}
	a, err := parseSlotName(s)
	if err != nil {
		return pciAddr{}, fmt.Errorf("%s is not a PCI device directory and its uevent gives no PCI address: %w", dev, err)
	}
	return a, nil
}

// Inventory describes every amdgpu card.
func (b *Backend) Inventory(ctx context.Context) (gpu.Inventory, error) {
	inv := gpu.Inventory{Backend: b.Name(), Devices: []gpu.Device{}}
	cards, err := b.listCards()
	if len(cards) == 0 {
		return inv, err
	}
	errs := []error{err}
	if v, err := b.version("/sys/module/amdgpu/version"); err != nil {
		errs = append(errs, err)
	} else {
		inv.DriverVersion = v
	}
	if v, err := ROCmVersion(b.fs); err != nil {
		errs = append(errs, err)
	} else {
		inv.ROCmVersion = v
	}
	kfd := b.kfdTopology(cards)
	for i, c := range cards {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("stopped after %d of %d GPUs: %w", i, len(cards), err))
			break
		}
		d, derrs := b.device(i, c, kfd)
		for _, e := range derrs {
			d.Errors = append(d.Errors, e.Error())
			errs = append(errs, fmt.Errorf("gpu %d (%s): %w", i, c.busID, e))
		}
		inv.Devices = append(inv.Devices, d)
	}
	return inv, errors.Join(errs...)
}

// version reads a version file; a missing one (in-tree driver, no ROCm
// on the host) is not an error.
func (b *Backend) version(p string) (string, error) {
	s, err := b.fs.ReadString(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	v, err := parseVersion(s)
	if err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	return v, nil
}

// attr reads an optional attribute of a card's device directory and
// parses it; ok is false when the file is missing, empty or fails, with a
// failure appended to errs. An empty attribute is absent, not an error:
// the driver writes nothing when it has no value (unique_id when the id is
// 0, as on APUs and SR-IOV virtual functions; product_name and
// serial_number on boards without a FRU record).
func attr[T any](b *Backend, dir, name string, parse func(string) (T, error), errs *[]error) (v T, ok bool) {
	p := dir + "/" + name
	s, err := b.fs.ReadString(p)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && s == "") {
		return v, false
	}
	if err == nil {
		v, err = parse(s)
		if err != nil {
			err = fmt.Errorf("%s: %w", name, err)
		}
	} else {
		err = fmt.Errorf("read %s: %w", name, err)
	}
	if err != nil {
		*errs = append(*errs, err)
		return v, false
	}
	return v, true
}

func text(s string) (string, error) { return s, nil }

func (b *Backend) device(i int, c card, kfd map[string]kfdNode) (gpu.Device, []error) {
	var errs []error
	d := gpu.Device{Index: i, Vendor: gpu.AMD, PCIBusID: c.busID, NUMANode: -1}
	d.PCIDeviceID, d.Product, d.Architecture = b.identify(c.dev, &errs)
	if id, ok := attr(b, c.dev, "unique_id", parseUniqueID, &errs); ok {
		d.UUID = id
	}
	if n, ok := attr(b, c.dev, "numa_node", parseNUMA, &errs); ok {
		d.NUMANode = n
	}
	if v, ok := attr(b, c.dev, "mem_info_vram_total", parseUint, &errs); ok {
		d.MemoryBytes = v
	}
	if s, ok := attr(b, c.dev, "serial_number", text, &errs); ok {
		d.Serial = s
	}
	if s, ok := attr(b, c.dev, "vbios_version", text, &errs); ok {
		d.VBIOSVersion = s
	}
	if hw := b.hwmon(c.dev); hw != "" {
		if uw, ok := attr(b, hw, "power1_cap", parseUint, &errs); ok {
			d.PowerLimitWatts = float64(uw) / 1e6
		}
	}
	cg, ok1 := attr(b, c.dev, "current_link_speed", parseLinkGen, &errs)
	cw, ok2 := attr(b, c.dev, "current_link_width", parseLinkWidth, &errs)
	mg, ok3 := attr(b, c.dev, "max_link_speed", parseLinkGen, &errs)
	mw, ok4 := attr(b, c.dev, "max_link_width", parseLinkWidth, &errs)
	if ok1 && ok2 && ok3 && ok4 {
		d.PCIeLink = &gpu.PCIeLink{CurrentGen: cg, CurrentWidth: cw, MaxGen: mg, MaxWidth: mw}
	}
	var p gpu.Partition
	p.Compute, _ = attr(b, c.dev, "current_compute_partition", parsePartition, &errs)
	p.Memory, _ = attr(b, c.dev, "current_memory_partition", parsePartition, &errs)
	p.AvailableCompute, _ = attr(b, c.dev, "available_compute_partition", parsePartitionList, &errs)
	p.AvailableMemory, _ = attr(b, c.dev, "available_memory_partition", parsePartitionList, &errs)
	if p.Compute != "" || p.Memory != "" {
		d.Partition = &p
	}
	if k, ok := kfd[c.busID]; ok {
		d.ComputeUnits = k.computeUnits
		if k.xgmiLinks > 0 {
			d.Interconnect = &gpu.Interconnect{Kind: gpu.XGMI, Links: k.xgmiLinks, Active: k.xgmiLinks}
		}
	}
	return d, errs
}

// identify reads a card's PCI device id and names its product: the name
// our table of Instinct GPUs gives for the id, else the board's
// product_name, else none. A name is never made up from the id: labels
// and dashboards would show it as a model ("GPU-0X687F").
func (b *Backend) identify(dev string, errs *[]error) (deviceID, product, arch string) {
	deviceID, _ = attr(b, dev, "device", parseDeviceID, errs)
	if m, ok := models[deviceID]; ok {
		return deviceID, m.product, m.arch
	}
	product, _ = attr(b, dev, "product_name", text, errs)
	return deviceID, product, ""
}

// hwmon returns the host path of the card's amdgpu hwmon directory, or "".
func (b *Backend) hwmon(dev string) string {
	names, err := b.fs.Names(dev + "/hwmon")
	if err != nil {
		return ""
	}
	for _, n := range names {
		if strings.HasPrefix(n, "hwmon") {
			return dev + "/hwmon/" + n
		}
	}
	return ""
}

// ROCmVersion reads the ROCm release installed on the host
// (/opt/rocm/.info/version); "" without an error when none is.
func ROCmVersion(fsys hostfs.FS) (string, error) {
	return New(fsys).version("/opt/rocm/.info/version")
}
