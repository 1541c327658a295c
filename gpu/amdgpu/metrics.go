package amdgpu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// The gpu_metrics file is a binary table the power-management firmware
// fills in: a 4-byte header (structure size, format revision, content
// revision) and a C struct whose layout depends on both revisions. The
// kernel sets every field the ASIC does not report to all ones.
//
// Supported: format 1, content 1 to 3 (MI100 uses 1.1, MI200 1.3), 4 and
// 5 (MI300 on Linux 6.7 to 6.8 and 6.9 on), and 6 to 8 (MI300, MI325X and
// MI350-series on newer kernels and ROCm's DKMS driver). 1.6 has two
// layouts under one revision number: its first form kept the VCN and JPEG
// activity at the top, the later one moved them into per-partition
// stats; the structure size in the header tells them apart. Other
// revisions (1.9 is a list of self-describing attributes, not a struct)
// are rejected: decoding a layout we do not know would report garbage,
// and the sampler falls back to the plain sysfs attributes instead.

// ErrUnsupported is returned for a gpu_metrics revision we cannot decode.
var ErrUnsupported = errors.New("unsupported gpu_metrics revision")

// Metrics is what the agent uses from a gpu_metrics table. Pointers are
// nil for fields the revision lacks or the ASIC does not report.
type Metrics struct {
	Format, Content uint8

	TempEdgeC, TempHotspotC, TempMemC *float64
	// Activity as ratios in [0, 1].
	GFXActivity, UMCActivity *float64
	SocketPowerW             *float64
	// EnergyMillijoules converts the firmware's accumulator (units of
	// 2^-16 J, 15.259 uJ).
	EnergyMillijoules *uint64
	GFXClockMHz       *float64
	MemClockMHz       *float64
	PCIeLinkWidth     *int
	// PCIeLinkSpeed in units of 0.1 GT/s.
	PCIeLinkSpeed *int
	PCIeReplays   *uint64
	// XGMIReadKB and XGMIWriteKB are the per-link data counters (8 links
	// on MI200/MI300), kilobytes; nil on revisions without them.
	XGMIReadKB, XGMIWriteKB []uint64
	// XGMILinkWidth is the number of lanes per link, XGMILinkSpeed the
	// bit rate in Gb/s.
	XGMILinkWidth, XGMILinkSpeed *int
	// XGMILinkUp is each link's state (1.7 on: xgmi_link_status, 1 up,
	// 0 down; nil for a link not reported); nil on older revisions.
	XGMILinkUp []*bool
	// IndepThrottleStatus (1.3) is the SMU's ASIC-independent throttler
	// bits (throttle.go); nil where not reported.
	IndepThrottleStatus *uint64
	// AccumulationCounter and ThrottleResidency (1.6 on) are the SMU's
	// tick count and, per throttler (ppt, prochot, socket_thermal,
	// vr_thermal, hbm_thermal), the ticks it held (throttle.go); nil
	// on older revisions.
	AccumulationCounter *uint64
	ThrottleResidency   map[string]uint64
}

// NumXGMILinks is the size of the XGMI arrays in gpu_metrics 1.4 to 1.8.
const NumXGMILinks = 8

// Sizes of the per-partition (XCP) stats arrays of 1.6 to 1.8, in bytes
// per partition (NUM_XCP = 8 of them), as the kernel declares the structs
// amdgpu_xcp_metrics (1.6), _v1_1 (1.7) and _v1_2 (1.8): we do not read
// them, only step over them.
const (
	numXCP       = 8
	xcpStatsV10  = 168 // u32 gfx_busy_inst[8], u16 jpeg_busy[32], u16 vcn_busy[4], u64 gfx_busy_acc[8]
	xcpStatsV11  = 232 // + u64 gfx_below_host_limit_acc[8]
	xcpStatsV12  = 440 // jpeg_busy[40]; + u64 below-host-limit ppt, thm, low utilisation, total [8] each
	xcpStatsElem = 8   // the structs are 8-byte aligned: stepped over as u64s
)

// field is one member of a gpu_metrics struct: its name, the size of one
// element in bytes (1, 2, 4, 8) and the number of elements.
type field struct {
	name  string
	size  int
	count int
}

func u16(name string) field              { return field{name, 2, 1} }
func u32(name string) field              { return field{name, 4, 1} }
func u64(name string) field              { return field{name, 8, 1} }
func arr(name string, size, n int) field { return field{name, size, n} }

// The layouts, member by member, as the kernel's kgd_pp_interface.h
// declares them (the header is the first 4 bytes of each). 1.6 to 1.8 are
// from the header as AMD's amdgpu tree has it now (ROCm/amdgpu, which also
// declares 1.9), the first form of 1.6 from Linux's before the partition
// stats moved in; gcc makes 1.6 1664 bytes and 1.7 2208 (testdata/layout.c).
var (
	v11Fields = []field{
		u16("temperature_edge"), u16("temperature_hotspot"), u16("temperature_mem"),
		u16("temperature_vrgfx"), u16("temperature_vrsoc"), u16("temperature_vrmem"),
		u16("average_gfx_activity"), u16("average_umc_activity"), u16("average_mm_activity"),
		u16("average_socket_power"), u64("energy_accumulator"), u64("system_clock_counter"),
		u16("average_gfxclk_frequency"), u16("average_socclk_frequency"), u16("average_uclk_frequency"),
		u16("average_vclk0_frequency"), u16("average_dclk0_frequency"), u16("average_vclk1_frequency"),
		u16("average_dclk1_frequency"),
		u16("current_gfxclk"), u16("current_socclk"), u16("current_uclk"), u16("current_vclk0"),
		u16("current_dclk0"), u16("current_vclk1"), u16("current_dclk1"),
		u32("throttle_status"), u16("current_fan_speed"),
		u16("pcie_link_width"), u16("pcie_link_speed"), u16("padding"),
		u32("gfx_activity_acc"), u32("mem_activity_acc"), arr("temperature_hbm", 2, 4),
	}
	v12Fields = append(v11Fields[:len(v11Fields):len(v11Fields)], u64("firmware_timestamp"))
	v13Fields = append(v12Fields[:len(v12Fields):len(v12Fields)],
		u16("voltage_soc"), u16("voltage_gfx"), u16("voltage_mem"), u16("padding1"),
		u64("indep_throttle_status"))

	v14Head = []field{
		u16("temperature_hotspot"), u16("temperature_mem"), u16("temperature_vrsoc"),
		u16("curr_socket_power"), u16("average_gfx_activity"), u16("average_umc_activity"),
		arr("vcn_activity", 2, 4),
	}
	v14Mid = []field{
		u64("energy_accumulator"), u64("system_clock_counter"),
		u32("throttle_status"), u32("gfxclk_lock_status"),
		u16("pcie_link_width"), u16("pcie_link_speed"), u16("xgmi_link_width"), u16("xgmi_link_speed"),
		u32("gfx_activity_acc"), u32("mem_activity_acc"),
		u64("pcie_bandwidth_acc"), u64("pcie_bandwidth_inst"), u64("pcie_l0_to_recov_count_acc"),
		u64("pcie_replay_count_acc"), u64("pcie_replay_rover_count_acc"),
	}
	v14Tail = []field{
		arr("xgmi_read_data_acc", 8, NumXGMILinks), arr("xgmi_write_data_acc", 8, NumXGMILinks),
		u64("firmware_timestamp"),
		arr("current_gfxclk", 2, 8), arr("current_socclk", 2, 4), arr("current_vclk0", 2, 4),
		arr("current_dclk0", 2, 4), u16("current_uclk"), u16("padding"),
	}
	v14Fields = concat(v14Head, v14Mid, v14Tail)
	// 1.5 adds the JPEG engines' activity after VCN's and the PCIe NAK
	// counters before the XGMI ones.
	v15Fields = concat(v14Head, []field{arr("jpeg_activity", 2, 32)}, v14Mid,
		[]field{u32("pcie_nak_sent_count_acc"), u32("pcie_nak_rcvd_count_acc")}, v14Tail)

	// 1.6 adds the accumulated throttler residencies after the timestamp.
	residencies = []field{
		u32("accumulation_counter"), u32("prochot_residency_acc"), u32("ppt_residency_acc"),
		u32("socket_thm_residency_acc"), u32("vr_thm_residency_acc"), u32("hbm_thm_residency_acc"),
	}
	// v16PCIe is what 1.6 and later keep of 1.5's middle, from the link
	// widths to the NAK counters.
	v16PCIe = []field{
		u16("pcie_link_width"), u16("pcie_link_speed"), u16("xgmi_link_width"), u16("xgmi_link_speed"),
		u32("gfx_activity_acc"), u32("mem_activity_acc"),
		u64("pcie_bandwidth_acc"), u64("pcie_bandwidth_inst"), u64("pcie_l0_to_recov_count_acc"),
		u64("pcie_replay_count_acc"), u64("pcie_replay_rover_count_acc"),
		u32("pcie_nak_sent_count_acc"), u32("pcie_nak_rcvd_count_acc"),
		arr("xgmi_read_data_acc", 8, NumXGMILinks), arr("xgmi_write_data_acc", 8, NumXGMILinks),
	}
	v16Clocks = []field{
		arr("current_gfxclk", 2, 8), arr("current_socclk", 2, 4), arr("current_vclk0", 2, 4),
		arr("current_dclk0", 2, 4), u16("current_uclk"),
	}
	// The first form of 1.6: 1.5 with the residencies.
	v16EarlyFields = concat(v14Head, []field{arr("jpeg_activity", 2, 32), u64("energy_accumulator"), u64("system_clock_counter")},
		residencies, []field{u32("throttle_status"), u32("gfxclk_lock_status")}, v16PCIe,
		[]field{u64("firmware_timestamp")}, v16Clocks, []field{u16("padding")})
	// v16Head is 1.6's top from its later form on: no VCN or JPEG
	// activity (they moved to the partition stats).
	v16Head = []field{
		u16("temperature_hotspot"), u16("temperature_mem"), u16("temperature_vrsoc"),
		u16("curr_socket_power"), u16("average_gfx_activity"), u16("average_umc_activity"),
	}
	// v16Fields is 1.6 as the kernel declares it now: no throttle_status,
	// and the partition count and stats at the end.
	v16Fields = concat(v16Head, []field{u64("energy_accumulator"), u64("system_clock_counter")}, residencies,
		[]field{u32("gfxclk_lock_status")}, v16PCIe, []field{u64("firmware_timestamp")}, v16Clocks,
		[]field{u16("num_partition"), arr("xcp_stats", xcpStatsElem, numXCP*xcpStatsV10/xcpStatsElem),
			u32("pcie_lc_perf_other_end_recovery")})
	// 1.7 adds the VRAM bandwidth up top and the XGMI link states, and
	// its partition stats gain a counter; 1.8's gain more.
	v17Fields = v17Like(xcpStatsV11)
	v18Fields = v17Like(xcpStatsV12)
)

func v17Like(xcpStats int) []field {
	return concat(v16Head, []field{u64("mem_max_bandwidth"), u64("energy_accumulator"), u64("system_clock_counter")},
		residencies, []field{u32("gfxclk_lock_status")}, v16PCIe,
		[]field{arr("xgmi_link_status", 2, NumXGMILinks), u16("padding"), u64("firmware_timestamp")}, v16Clocks,
		[]field{u16("num_partition"), arr("xcp_stats", xcpStatsElem, numXCP*xcpStats/xcpStatsElem),
			u32("pcie_lc_perf_other_end_recovery")})
}

func concat(parts ...[]field) []field {
	var out []field
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// layout is a struct's member offsets, computed with C's natural alignment
// (each member aligned to its element size, the struct to its largest).
type layout struct {
	offsets map[string]field // name -> field with size, count
	at      map[string]int
	size    int
}

func newLayout(fields []field) layout {
	l := layout{offsets: map[string]field{}, at: map[string]int{}}
	off, align := 4, 2 // after the header: uint16 + 2 x uint8
	for _, f := range fields {
		off = (off + f.size - 1) / f.size * f.size
		l.offsets[f.name], l.at[f.name] = f, off
		off += f.size * f.count
		align = max(align, f.size)
	}
	l.size = (off + align - 1) / align * align
	return l
}

// layouts are the supported revisions' layouts; where one revision has
// had several (1.6), the current one comes last.
var layouts = map[[2]uint8][]layout{
	{1, 1}: {newLayout(v11Fields)},
	{1, 2}: {newLayout(v12Fields)},
	{1, 3}: {newLayout(v13Fields)},
	{1, 4}: {newLayout(v14Fields)},
	{1, 5}: {newLayout(v15Fields)},
	{1, 6}: {newLayout(v16EarlyFields), newLayout(v16Fields)},
	{1, 7}: {newLayout(v17Fields)},
	{1, 8}: {newLayout(v18Fields)},
}

// Layout returns the member offsets and struct size of a supported
// revision (its current layout), for tests that check them against a C
// compiler and for the simulated nodes that write tables.
func Layout(format, content uint8) (offsets map[string]int, size int, ok bool) {
	ls := layouts[[2]uint8{format, content}]
	if len(ls) == 0 {
		return nil, 0, false
	}
	l := ls[len(ls)-1]
	return l.at, l.size, true
}

// Layouts returns every layout a revision has had, oldest first.
func Layouts(format, content uint8) (offsets []map[string]int, sizes []int) {
	for _, l := range layouts[[2]uint8{format, content}] {
		offsets, sizes = append(offsets, l.at), append(sizes, l.size)
	}
	return offsets, sizes
}

// ParseMetrics decodes a gpu_metrics table.
func ParseMetrics(b []byte) (Metrics, error) {
	if len(b) < 4 {
		return Metrics{}, fmt.Errorf("gpu_metrics: %d bytes, shorter than its header", len(b))
	}
	size := int(binary.LittleEndian.Uint16(b))
	m := Metrics{Format: b[2], Content: b[3]}
	ls, ok := layouts[[2]uint8{m.Format, m.Content}]
	if !ok {
		return m, fmt.Errorf("gpu_metrics %d.%d: %w", m.Format, m.Content, ErrUnsupported)
	}
	var l layout
	var sizes []string
	for _, c := range ls {
		if c.size == size {
			l, ok = c, true
			break
		}
		ok = false
		sizes = append(sizes, fmt.Sprint(c.size))
	}
	if !ok {
		return m, fmt.Errorf("gpu_metrics %d.%d: header says %d bytes, the layouts have %s", m.Format, m.Content, size, strings.Join(sizes, " or "))
	}
	if len(b) < size {
		return m, fmt.Errorf("gpu_metrics %d.%d: %d bytes, want %d", m.Format, m.Content, len(b), size)
	}
	r := reader{b: b, l: l}
	if m.Content <= 3 {
		m.TempEdgeC = r.celsius("temperature_edge")
		m.SocketPowerW = r.float("average_socket_power", 1)
		m.GFXClockMHz = r.float("current_gfxclk", 1)
		m.MemClockMHz = r.float("current_uclk", 1)
	} else {
		m.SocketPowerW = r.float("curr_socket_power", 1)
		m.GFXClockMHz = r.float("current_gfxclk", 1) // the first XCC's
		m.MemClockMHz = r.float("current_uclk", 1)
		m.PCIeReplays = r.uint("pcie_replay_count_acc")
		m.XGMILinkWidth = r.int("xgmi_link_width")
		m.XGMILinkSpeed = r.int("xgmi_link_speed")
		m.XGMIReadKB = r.array("xgmi_read_data_acc")
		m.XGMIWriteKB = r.array("xgmi_write_data_acc")
		if f, ok := r.l.offsets["xgmi_link_status"]; ok {
			m.XGMILinkUp = make([]*bool, f.count)
			for i := range f.count {
				if v, ok := r.raw("xgmi_link_status", i); ok {
					m.XGMILinkUp[i] = ptr(v == 1)
				}
			}
		}
	}
	m.TempHotspotC = r.celsius("temperature_hotspot")
	m.TempMemC = r.celsius("temperature_mem")
	m.GFXActivity = r.ratio("average_gfx_activity")
	m.UMCActivity = r.ratio("average_umc_activity")
	if e := r.uint("energy_accumulator"); e != nil {
		mj := uint64(float64(*e) * 1000 / 65536)
		m.EnergyMillijoules = &mj
	}
	m.PCIeLinkWidth = r.int("pcie_link_width")
	m.PCIeLinkSpeed = r.int("pcie_link_speed")
	m.IndepThrottleStatus = r.uint("indep_throttle_status")
	m.AccumulationCounter = r.uint("accumulation_counter")
	for _, f := range residencyFields {
		if v := r.uint(f.field); v != nil {
			if m.ThrottleResidency == nil {
				m.ThrottleResidency = map[string]uint64{}
			}
			m.ThrottleResidency[f.reason] = *v
		}
	}
	return m, nil
}

// reader reads members of one table; every accessor returns nil for a
// member that is all ones (not reported).
type reader struct {
	b []byte
	l layout
}

func (r reader) raw(name string, i int) (uint64, bool) {
	f, ok := r.l.offsets[name]
	if !ok || i >= f.count {
		return 0, false
	}
	off := r.l.at[name] + i*f.size
	var v, ones uint64
	switch f.size {
	case 2:
		v, ones = uint64(binary.LittleEndian.Uint16(r.b[off:])), 0xffff
	case 4:
		v, ones = uint64(binary.LittleEndian.Uint32(r.b[off:])), 0xffffffff
	case 8:
		v, ones = binary.LittleEndian.Uint64(r.b[off:]), ^uint64(0)
	default:
		return 0, false
	}
	return v, v != ones
}

func (r reader) uint(name string) *uint64 {
	v, ok := r.raw(name, 0)
	if !ok {
		return nil
	}
	return &v
}

func (r reader) int(name string) *int {
	v, ok := r.raw(name, 0)
	if !ok {
		return nil
	}
	n := int(v)
	return &n
}

func (r reader) float(name string, scale float64) *float64 {
	v, ok := r.raw(name, 0)
	if !ok {
		return nil
	}
	f := float64(v) * scale
	return &f
}

// celsius reads a temperature; 0 is what ASICs without the sensor report
// on some firmware, so it counts as absent too.
func (r reader) celsius(name string) *float64 {
	v, ok := r.raw(name, 0)
	if !ok || v == 0 {
		return nil
	}
	f := float64(v)
	return &f
}

// ratio reads a percentage; over 100 is not a reading.
func (r reader) ratio(name string) *float64 {
	v, ok := r.raw(name, 0)
	if !ok || v > 100 {
		return nil
	}
	f := float64(v) / 100
	return &f
}

// array reads every element of an array member, or nil when none is
// reported.
func (r reader) array(name string) []uint64 {
	f, ok := r.l.offsets[name]
	if !ok {
		return nil
	}
	out := make([]uint64, f.count)
	seen := false
	for i := range f.count {
		v, ok := r.raw(name, i)
		if ok {
			out[i], seen = v, true
		}
	}
	if !seen {
		return nil
	}
	return out
}
