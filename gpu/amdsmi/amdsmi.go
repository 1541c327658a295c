// Package amdsmi is the AMD GPU backend over AMD SMI (libamd_smi.so). The
// library is opened with dlopen at run time by a small C shim of our own
// (shim.c), so one agent binary runs on NVIDIA, AMD and CPU-only nodes and
// needs no ROCm to build. The library's version is checked before any
// struct is exchanged, and selects one of the layouts declared in
// amdsmi_types.h: AMD SMI 24.7 (ROCm 6.3), 25.x (ROCm 6.4) or 26.x
// (ROCm 7.x). Other versions are not used.
package amdsmi

/*
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/amdgpu"
	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/internal/source"
)

// DefaultLibraries are tried in order when no path is configured: the
// loader's search path, then ROCm's default install location in the
// agent's own filesystem. Candidates adds the host's ROCm installs.
var DefaultLibraries = []gpu.Library{
	{Path: "libamd_smi.so", Found: gpu.FoundRuntime},
	{Path: "/opt/rocm/lib/libamd_smi.so", Found: gpu.FoundWellKnown},
}

// Candidates lists where libamd_smi.so is looked for: libraryPath alone
// when set; else DefaultLibraries, then the host's ROCm under hostRoot:
// opt/rocm/lib, then each opt/rocm-<version>/lib, newest version first.
// optNames are the names in the host's /opt. Paths are listed once.
func Candidates(hostRoot, libraryPath string, optNames []string) []gpu.Library {
	if libraryPath != "" {
		return []gpu.Library{{Path: libraryPath, Found: gpu.FoundConfigured}}
	}
	out := slices.Clone(DefaultLibraries)
	var versioned []string
	for _, n := range optNames {
		if v, ok := strings.CutPrefix(n, "rocm-"); ok && v != "" {
			versioned = append(versioned, n)
		}
	}
	slices.SortFunc(versioned, func(a, b string) int { return compareVersions(b[len("rocm-"):], a[len("rocm-"):]) })
	for _, d := range append([]string{"rocm"}, versioned...) {
		p := path.Join("/", hostRoot, "opt", d, "lib/libamd_smi.so")
		if !slices.ContainsFunc(out, func(l gpu.Library) bool { return l.Path == p }) {
			out = append(out, gpu.Library{Path: p, Found: gpu.FoundWellKnown})
		}
	}
	return out
}

// compareVersions orders dotted versions by their numbers ("6.10.0" after
// "6.4.1"); parts that are not numbers compare as text.
func compareVersions(a, b string) int {
	as, bs := strings.FieldsFunc(a, isVersionSep), strings.FieldsFunc(b, isVersionSep)
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, errX := strconv.Atoi(as[i])
		y, errY := strconv.Atoi(bs[i])
		if c := cmp.Compare(x, y); errX == nil && errY == nil && c != 0 {
			return c
		}
		if c := strings.Compare(as[i], bs[i]); (errX != nil || errY != nil) && c != 0 {
			return c
		}
	}
	return cmp.Compare(len(as), len(bs))
}

func isVersionSep(r rune) bool { return r == '.' || r == '-' }

// Version is an AMD SMI library version: year-based up to 24.x
// (24.7.1.0), major.minor.release from 25.x on (Year 0: 26.1.0).
type Version struct{ Year, Major, Minor, Release uint32 }

func (v Version) String() string {
	if v.Year == 0 {
		return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Release)
	}
	return fmt.Sprintf("%d.%d.%d.%d", v.Year, v.Major, v.Minor, v.Release)
}

// versionOf reads amdsmi_version_t's first four words. Up to 24.x they
// are year, major, minor, release. 26.x dropped the year (major, minor,
// release). ROCm 6.4's 25.x numbers itself major.minor.release but kept
// the year member, unused, in front; a library that still fills it with
// 25 reads the same either way.
func versionOf(w [4]uint32) Version {
	switch {
	case w[0] <= 24:
		if w[1] == 25 { // 25.x behind an unused year
			return Version{Major: 25, Minor: w[2], Release: w[3]}
		}
		return Version{w[0], w[1], w[2], w[3]}
	case w[0] == 25 && w[1] == 25:
		return Version{Major: 25, Minor: w[2], Release: w[3]}
	default:
		return Version{Major: w[0], Minor: w[1], Release: w[2]}
	}
}

// layout is how a library version lays out the structs we exchange.
type layout struct {
	structs        int  // enum smi_layout
	powerSensorArg bool // amdsmi_get_power_info takes a sensor index
	shortLinks     bool // 48-byte link metrics entries
}

// layout returns the library version's layout, and ok false for a version
// whose structs we do not know.
func (v Version) layout() (l layout, ok bool) {
	switch {
	case v.Year == 24 && v.Major == 7:
		return layout{structs: C.LAYOUT_24}, true
	case v.Year == 0 && v.Major == 25 && v.Minor >= 2:
		// 25.2 is ROCm 6.4.0; 25.0 and 25.1 were never released. 25.2
		// alone took a sensor index (reverted in 25.3, ROCm 6.4.1).
		return layout{structs: C.LAYOUT_25, powerSensorArg: v.Minor == 2}, true
	case v.Year == 0 && v.Major == 26:
		// 26.0 is ROCm 7.0; 26.1 (ROCm 7.1) shortened the link entries.
		return layout{structs: C.LAYOUT_26, shortLinks: v.Minor >= 1}, true
	}
	return layout{}, false
}

// Supported reports whether the structs we declare match the library's.
func (v Version) Supported() bool {
	_, ok := v.layout()
	return ok
}

// supportedVersions names what Supported accepts, for messages.
const supportedVersions = "24.7, 25.2 to 25.x, 26.x"

// ErrUnsupportedVersion marks a library that loaded but whose structs we
// do not know (its version, or its ASIC info read through the version's
// layout): the node has AMD SMI, just not one we can read. Errors that
// hold it are absent errors too.
var ErrUnsupportedVersion = errors.New("AMD SMI version whose structs we do not know")

// unsupportedError is absent (the agent reads amdgpu sysfs instead) and
// ErrUnsupportedVersion.
type unsupportedError struct{ reason string }

func (e *unsupportedError) Error() string { return e.reason }
func (e *unsupportedError) Is(target error) bool {
	return target == source.ErrAbsent || target == ErrUnsupportedVersion
}

// Status is an amdsmi_status_t that is not success.
type Status uint32

// statusMissing is what the shim returns for a function the library lacks.
const statusMissing Status = 0xffffffff

func (s Status) Error() string {
	switch s {
	case 1:
		return "invalid parameters"
	case 2:
		return "not supported"
	case 3:
		return "not yet implemented"
	case 10:
		return "permission denied"
	case 31:
		return "device not found"
	case 34:
		return "driver not loaded"
	case 43:
		return "unexpected data (a struct not laid out as we declared it)"
	case statusMissing:
		return "function missing from the library"
	}
	return fmt.Sprintf("AMD SMI status %d", uint32(s))
}

// notSupported is a status that means "this GPU does not report it".
func notSupported(s Status) bool { return s == 2 || s == 3 || s == statusMissing }

func status(st C.amdsmi_status_t) error {
	if st == 0 {
		return nil
	}
	return Status(st)
}

// Backend implements gpu.Backend and gpu.Sampler over AMD SMI. Every call
// into the library holds mu: the library is initialised once, by Open, and
// shut down by Close.
type Backend struct {
	mu      sync.Mutex
	lib     *C.smi_lib
	library gpu.Library
	version Version
	fs      *hostfs.FS
	now     func() time.Time
	// identity of each GPU by index, kept for its "down" samples.
	known map[int]gpu.Sample
	// residency is each GPU's throttler residencies at the last round,
	// by bus id (throttle.go).
	residency map[string]map[string]uint64
}

var (
	_ gpu.Backend = (*Backend)(nil)
	_ gpu.Sampler = (*Backend)(nil)
)

// Option configures a Backend.
type Option func(*Backend)

// WithHostFS reads the ROCm version from the host root fsys.
func WithHostFS(fsys hostfs.FS) Option { return func(b *Backend) { b.fs = &fsys } }

// WithClock stamps samples with now instead of time.Now.
func WithClock(now func() time.Time) Option { return func(b *Backend) { b.now = now } }

// Open loads AMD SMI from path (DefaultLibraries when empty); see OpenFirst.
func Open(path string, opts ...Option) (*Backend, error) {
	if path != "" {
		return OpenFirst([]gpu.Library{{Path: path, Found: gpu.FoundConfigured}}, opts...)
	}
	return OpenFirst(DefaultLibraries, opts...)
}

// OpenFirst loads AMD SMI from the first of cands that loads, checks its
// version and initialises it for AMD GPUs. A library that is missing, lacks
// a function we need, has a version whose structs we do not know, or finds
// no driver gives an error for which errors.Is(err, source.ErrAbsent)
// holds, with the reason; the agent then reads amdgpu sysfs instead.
func OpenFirst(cands []gpu.Library, opts ...Option) (*Backend, error) {
	b := &Backend{now: time.Now, known: map[int]gpu.Sample{}}
	for _, o := range opts {
		o(b)
	}
	var reasons []string
	unsupported := false
	for _, c := range cands {
		err := b.open(c.Path)
		if err == nil {
			b.library = c
			if !strings.Contains(c.Path, "/") { // by name: name the file the loader picked
				if maps, err := os.ReadFile("/proc/self/maps"); err == nil {
					if p := gpu.MappedLibrary(maps, c.Path); p != "" {
						b.library.Path = p
					}
				}
			}
			return b, nil
		}
		if !errors.Is(err, source.ErrAbsent) {
			return nil, err
		}
		reasons = append(reasons, err.Error())
		unsupported = unsupported || errors.Is(err, ErrUnsupportedVersion)
	}
	reason := "AMD SMI not usable: " + strings.Join(reasons, "; ")
	if unsupported {
		return nil, &unsupportedError{reason}
	}
	return nil, source.NewAbsent("%s", reason)
}

func (b *Backend) open(path string) error {
	lib := (*C.smi_lib)(C.calloc(1, C.sizeof_smi_lib))
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var errBuf [512]C.char
	switch C.smi_open(cpath, lib, &errBuf[0], C.size_t(len(errBuf))) {
	case 0:
	default:
		C.free(unsafe.Pointer(lib))
		return source.NewAbsent("%s", C.GoString(&errBuf[0]))
	}
	fail := func(err error) error {
		C.smi_close(lib)
		C.free(unsafe.Pointer(lib))
		return err
	}
	var v [4]C.uint32_t
	if err := status(C.smi_lib_version(lib, &v[0])); err != nil {
		return fail(source.NewAbsent("%s: amdsmi_get_lib_version: %v", path, err))
	}
	ver := versionOf([4]uint32{uint32(v[0]), uint32(v[1]), uint32(v[2]), uint32(v[3])})
	lay, ok := ver.layout()
	if !ok {
		return fail(&unsupportedError{fmt.Sprintf("%s: AMD SMI %s is not a version whose structs we know (%s)", path, ver, supportedVersions)})
	}
	C.smi_set_layout(lib, C.int(lay.structs), C.int(boolInt(lay.powerSensorArg)), C.int(boolInt(lay.shortLinks)))
	if err := status(C.smi_init(lib, C.AMDSMI_INIT_AMD_GPUS)); err != nil {
		return fail(source.NewAbsent("%s: amdsmi_init: %v", path, err))
	}
	b.lib, b.version = lib, ver
	if err := b.checkLayout(); err != nil {
		C.smi_shut_down(lib)
		b.lib = nil
		return fail(&unsupportedError{fmt.Sprintf("%s: AMD SMI %s: %v", path, ver, err)})
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// checkLayout reads the first GPU's ASIC info and checks it reads as an
// AMD GPU's (vendor 0x1002 and a device id in the low 16 bits, which is
// all we use of it): a library whose structs are not laid out as we
// declared them for its version is not used, so a wrong layout reads
// nothing rather than garbage. Read through the 25.x/26.x layout, a 24.7
// struct has no device id where 26.x has it (past its end).
func (b *Backend) checkLayout() error {
	handles, err := b.gpus()
	if err != nil || len(handles) == 0 {
		return nil // nothing to check; listing errors show when sampling
	}
	var a C.smi_asic_t
	if C.smi_asic(b.lib, handles[0], &a) != 0 {
		return nil
	}
	if a.vendor_id != 0x1002 || a.device_id&0xffff == 0 {
		return fmt.Errorf("ASIC info does not read as the layout we declared for this version (vendor %#x, device %#x): not used", uint32(a.vendor_id), uint64(a.device_id))
	}
	return nil
}

// Name identifies the backend in source status.
func (b *Backend) Name() string { return source.AMDSMI }

// Version is the loaded library's version.
func (b *Backend) Version() Version { return b.version }

// Close shuts the library down and unloads it; later calls report it
// absent.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.lib == nil {
		return nil
	}
	err := status(C.smi_shut_down(b.lib))
	C.smi_close(b.lib)
	C.free(unsafe.Pointer(b.lib))
	b.lib = nil
	if err != nil {
		return fmt.Errorf("amdsmi_shut_down: %w", err)
	}
	return nil
}

// maxGPUs bounds the processor list (AMDSMI_MAX_DEVICES is 32).
const maxGPUs = 64

// gpus lists the processor handles; called with mu held.
func (b *Backend) gpus() ([]C.amdsmi_processor_handle, error) {
	if b.lib == nil {
		return nil, source.NewAbsent("AMD SMI is closed")
	}
	var handles [maxGPUs]C.amdsmi_processor_handle
	n := C.uint32_t(maxGPUs)
	if err := status(C.smi_gpus(b.lib, &handles[0], &n)); err != nil {
		return nil, fmt.Errorf("list GPUs: %w", err)
	}
	if n > maxGPUs {
		return nil, fmt.Errorf("list GPUs: %d processors, more than the %d we track", n, maxGPUs)
	}
	return handles[:n], nil
}

// call records a failed optional call: not supported is no error.
func call(errs *[]error, fn string, st C.amdsmi_status_t) bool {
	err := status(st)
	if err == nil {
		return true
	}
	var s Status
	if errors.As(err, &s) && notSupported(s) {
		return false
	}
	*errs = append(*errs, fmt.Errorf("%s: %w", fn, err))
	return false
}

// Inventory describes every GPU AMD SMI lists, in its order.
func (b *Backend) Inventory(ctx context.Context) (gpu.Inventory, error) {
	inv := gpu.Inventory{Backend: b.Name(), Devices: []gpu.Device{}}
	b.mu.Lock()
	defer b.mu.Unlock()
	handles, err := b.gpus()
	if err != nil {
		return inv, err
	}
	inv.LibraryVersion = b.version.String()
	lib := b.library
	inv.Library = &lib
	var errs []error
	if b.fs != nil {
		v, err := amdgpu.ROCmVersion(*b.fs)
		errs = append(errs, err)
		inv.ROCmVersion = v
	}
	for i, h := range handles {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("stopped after %d of %d GPUs: %w", i, len(handles), err))
			break
		}
		d, drv, derrs := b.device(i, h)
		if inv.DriverVersion == "" {
			inv.DriverVersion = drv
		}
		for _, e := range derrs {
			d.Errors = append(d.Errors, e.Error())
			errs = append(errs, fmt.Errorf("gpu %d: %w", i, e))
		}
		inv.Devices = append(inv.Devices, d)
	}
	return inv, errors.Join(errs...)
}

// busID formats amdsmi_bdf_t (function 3 bits, device 5, bus 8, domain 48).
func busID(v uint64) string {
	return fmt.Sprintf("%04x:%02x:%02x.%x", v>>16, (v>>8)&0xff, (v>>3)&0x1f, v&7)
}

func cstr(p *C.char, n int) string {
	b := C.GoBytes(unsafe.Pointer(p), C.int(n))
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		b = b[:i]
	}
	return strings.TrimSpace(string(b))
}

// identity reads what names a GPU on every series: its PCI bus ID, UUID
// and ASIC info (nil when unreadable).
func (b *Backend) identity(h C.amdsmi_processor_handle, errs *[]error) (pciBusID, uuid string, asic *C.smi_asic_t) {
	var bdf C.uint64_t
	if call(errs, "amdsmi_get_gpu_device_bdf", C.smi_bdf(b.lib, h, &bdf)) {
		pciBusID = busID(uint64(bdf))
	}
	var id [C.AMDSMI_GPU_UUID_SIZE + 2]C.char
	if call(errs, "amdsmi_get_gpu_device_uuid", C.smi_uuid(b.lib, h, &id[0], C.uint(len(id)))) {
		uuid = cstr(&id[0], len(id))
	}
	var info C.smi_asic_t
	if call(errs, "amdsmi_get_gpu_asic_info", C.smi_asic(b.lib, h, &info)) {
		asic = &info
	}
	return pciBusID, uuid, asic
}

func (b *Backend) device(i int, h C.amdsmi_processor_handle) (d gpu.Device, driver string, errs []error) {
	d = gpu.Device{Index: i, Vendor: gpu.AMD, NUMANode: -1}
	var asic *C.smi_asic_t
	d.PCIBusID, d.UUID, asic = b.identity(h, &errs)
	if asic != nil {
		d.PCIDeviceID = fmt.Sprintf("0x%04x", uint64(asic.device_id)&0xffff)
		d.Product = cstr(&asic.market_name[0], len(asic.market_name))
		if product, arch, ok := amdgpu.ModelOf(d.PCIDeviceID); ok {
			d.Architecture = arch
			if d.Product == "" {
				d.Product = product
			}
		}
		if cu := uint32(asic.num_of_compute_units); cu != 0 && cu != 0xffffffff {
			d.ComputeUnits = int(cu)
		}
		d.Serial = cstr(&asic.asic_serial[0], len(asic.asic_serial))
	}
	var drv C.smi_driver_t
	if call(&errs, "amdsmi_get_gpu_driver_info", C.smi_driver(b.lib, h, &drv)) {
		driver = cstr(&drv.driver_version[0], len(drv.driver_version))
	}
	var numa C.int32_t
	if call(&errs, "amdsmi_get_gpu_topo_numa_affinity", C.smi_numa(b.lib, h, &numa)) && numa >= -1 {
		d.NUMANode = int(numa)
	}
	var total C.uint64_t
	if call(&errs, "amdsmi_get_gpu_memory_total", C.smi_mem_total(b.lib, h, &total)) {
		d.MemoryBytes = uint64(total)
	}
	var p gpu.Partition
	var buf [64]C.char
	if call(&errs, "amdsmi_get_gpu_compute_partition", C.smi_partition(b.lib, h, 0, &buf[0], C.uint32_t(len(buf)))) {
		p.Compute = strings.ToUpper(cstr(&buf[0], len(buf)))
	}
	if call(&errs, "amdsmi_get_gpu_memory_partition", C.smi_partition(b.lib, h, 1, &buf[0], C.uint32_t(len(buf)))) {
		p.Memory = strings.ToUpper(cstr(&buf[0], len(buf)))
	}
	if p.Compute != "" || p.Memory != "" {
		d.Partition = &p
	}
	if links, ok := b.links(h, &errs); ok && len(links) > 0 {
		d.Interconnect = &gpu.Interconnect{Kind: gpu.XGMI, Links: len(links), Active: len(links)}
	}
	return d, driver, errs
}

// links returns the GPU's XGMI links from amdsmi_get_link_metrics.
func (b *Backend) links(h C.amdsmi_processor_handle, errs *[]error) ([]C.smi_link_t, bool) {
	m := (*C.smi_links_t)(C.calloc(1, C.sizeof_smi_links_t))
	defer C.free(unsafe.Pointer(m))
	if !call(errs, "amdsmi_get_link_metrics", C.smi_links(b.lib, h, m)) {
		return nil, false
	}
	n := min(int(m.num_links), C.AMDSMI_MAX_NUM_XGMI_PHYSICAL_LINK)
	var out []C.smi_link_t
	for _, l := range m.links[:n] {
		if l.xgmi != 0 {
			out = append(out, l)
		}
	}
	return out, true
}
