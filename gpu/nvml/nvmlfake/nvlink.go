package nvmlfake

import (
	"math"
	"strconv"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// NVLink error counters. Before Blackwell the driver keeps, per link, the
// totals over the link's lanes (field ids 38, 45, 52, 59, 160; nvml.h:
// "Link ID needs to be specified in the scopeId field"). Blackwell's
// NVLink 5 drops them (NOT_SUPPORTED; nvml.h points at the
// NVML_FI_DEV_NVLINK_COUNT_* fields instead) and keeps the counters 201-222,
// which a scopeId of UINT_MAX sums over all links (DCGM's
// NvmlFieldRequiresNvLinkAggregate asks them that way).

// nvlink5 is whether the model's links are NVLink 5 or newer.
func (f *machine) nvlink5() bool { return f.spec.linkVersion >= gonvml.NVLINK_VERSION_5_0 }

// legacyNVLinkErrors is a per-link total of the pre-Blackwell fields.
func (d *device) legacyNVLinkErrors(field uint32, link int, t float64) (uint64, gonvml.Return) {
	if d.f.nvlink5() {
		return 0, gonvml.ERROR_NOT_SUPPORTED
	}
	if link < 0 || link >= d.f.spec.links {
		return 0, gonvml.ERROR_INVALID_ARGUMENT
	}
	l := strconv.Itoa(link)
	switch field {
	case gonvml.FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL:
		return d.sinceReset(d.slow("nvlink-replay-"+l, 20, 600*float64(d.f.spec.links)), t), gonvml.SUCCESS
	case gonvml.FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL:
		return d.offset("nvlink-recovery-"+l, 2), gonvml.SUCCESS
	case gonvml.FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL:
		return d.sinceReset(d.slow("nvlink-crc-flit-"+l, 10, 1200*float64(d.f.spec.links)), t), gonvml.SUCCESS
	}
	return 0, gonvml.SUCCESS // CRC data and ECC data errors: none
}

// nvlink5Counter is one NVLink 5 error counter: per link it grows by one
// every period seconds from a per-link start (0 when period is 0).
type nvlink5Counter struct {
	kind   string
	period float64
}

var nvlink5Counters = map[uint32]nvlink5Counter{
	gonvml.FI_DEV_NVLINK_COUNT_MALFORMED_PACKET_ERRORS:         {"nvl5-malformed", 0},
	gonvml.FI_DEV_NVLINK_COUNT_BUFFER_OVERRUN_ERRORS:           {"nvl5-overrun", 0},
	gonvml.FI_DEV_NVLINK_COUNT_RCV_ERRORS:                      {"nvl5-rcv", 7200},
	gonvml.FI_DEV_NVLINK_COUNT_RCV_REMOTE_ERRORS:               {"nvl5-rcv-remote", 0},
	gonvml.FI_DEV_NVLINK_COUNT_RCV_GENERAL_ERRORS:              {"nvl5-rcv-general", 0},
	gonvml.FI_DEV_NVLINK_COUNT_LOCAL_LINK_INTEGRITY_ERRORS:     {"nvl5-integrity", 0},
	gonvml.FI_DEV_NVLINK_COUNT_XMIT_DISCARDS:                   {"nvl5-discards", 0},
	gonvml.FI_DEV_NVLINK_COUNT_LINK_RECOVERY_SUCCESSFUL_EVENTS: {"nvl5-recovery-ok", 0},
	gonvml.FI_DEV_NVLINK_COUNT_LINK_RECOVERY_FAILED_EVENTS:     {"nvl5-recovery-failed", 0},
	gonvml.FI_DEV_NVLINK_COUNT_LINK_RECOVERY_EVENTS:            {"nvl5-recovery-ok", 0}, // all recoveries succeeded
	gonvml.FI_DEV_NVLINK_COUNT_EFFECTIVE_ERRORS:                {"nvl5-effective", 3600},
	gonvml.FI_DEV_NVLINK_COUNT_SYMBOL_ERRORS:                   {"nvl5-symbol", 60},
}

// nvlink5Errors answers an NVLink 5 counter for one link or, with scope
// UINT_MAX, for all of them.
func (d *device) nvlink5Errors(c nvlink5Counter, scope uint32, t float64) (uint64, gonvml.Return) {
	if !d.f.nvlink5() {
		return 0, gonvml.ERROR_NOT_SUPPORTED
	}
	one := func(link int) uint64 {
		kind := c.kind + "-" + strconv.Itoa(link)
		if c.kind == "nvl5-recovery-failed" {
			return 0
		}
		if c.period == 0 {
			return d.offset(kind, 2)
		}
		return d.sinceReset(d.slow(kind, 50, c.period), t)
	}
	if scope == math.MaxUint32 {
		var sum uint64
		for link := range d.f.spec.links {
			sum += one(link)
		}
		return sum, gonvml.SUCCESS
	}
	if int64(scope) >= int64(d.f.spec.links) {
		return 0, gonvml.ERROR_INVALID_ARGUMENT
	}
	return one(int(scope)), gonvml.SUCCESS
}
