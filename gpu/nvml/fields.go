package nvml

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpunode/gpunode/gpu"
)

// Field values read in one nvmlDeviceGetFieldValues call per GPU. Units
// are nvml.h's: degrees C, bytes, KiB (NVLink data throughput), counts.
const (
	fieldMemoryTemp = gonvml.FI_DEV_MEMORY_TEMP
	fieldPCIeTx     = gonvml.FI_DEV_PCIE_COUNT_TX_BYTES
	fieldPCIeRx     = gonvml.FI_DEV_PCIE_COUNT_RX_BYTES
	fieldNVLinkTx   = gonvml.FI_DEV_NVLINK_THROUGHPUT_DATA_TX // per link (scope), KiB
	fieldNVLinkRx   = gonvml.FI_DEV_NVLINK_THROUGHPUT_DATA_RX
)

// nvlinkErrorField is an NVLink error counter and the type it is exported as.
type nvlinkErrorField struct {
	typ string
	id  uint32
}

// nvlinkLegacyErrors are the error totals of one link over its lanes
// (nvml.h: "Link ID needs to be specified in the scopeId field"), asked per
// link and summed; sorted by type name. Blackwell and newer answer them
// NOT_SUPPORTED (nvml.h: "unsupported for Blackwell+", use the
// NVML_FI_DEV_NVLINK_COUNT_* fields).
var nvlinkLegacyErrors = []nvlinkErrorField{
	{"crc_data", gonvml.FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL},
	{"crc_flit", gonvml.FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL},
	{"ecc_data", gonvml.FI_DEV_NVLINK_ECC_DATA_ERROR_COUNT_TOTAL},
	{"recovery", gonvml.FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL},
	{"replay", gonvml.FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL},
}

// nvlink5Errors are NVLink 5's counters (field ids 206-221), asked once
// each with the aggregate scope (scopeId UINT_MAX sums all links, as DCGM
// asks them); sorted by type name. BER fields are rates, not counters.
var nvlink5Errors = []nvlinkErrorField{
	{"buffer_overrun", gonvml.FI_DEV_NVLINK_COUNT_BUFFER_OVERRUN_ERRORS},
	{"effective", gonvml.FI_DEV_NVLINK_COUNT_EFFECTIVE_ERRORS},
	{"local_link_integrity", gonvml.FI_DEV_NVLINK_COUNT_LOCAL_LINK_INTEGRITY_ERRORS},
	{"malformed_packet", gonvml.FI_DEV_NVLINK_COUNT_MALFORMED_PACKET_ERRORS},
	{"receive", gonvml.FI_DEV_NVLINK_COUNT_RCV_ERRORS},
	{"receive_general", gonvml.FI_DEV_NVLINK_COUNT_RCV_GENERAL_ERRORS},
	{"receive_remote", gonvml.FI_DEV_NVLINK_COUNT_RCV_REMOTE_ERRORS},
	{"recovery", gonvml.FI_DEV_NVLINK_COUNT_LINK_RECOVERY_EVENTS},
	{"recovery_failed", gonvml.FI_DEV_NVLINK_COUNT_LINK_RECOVERY_FAILED_EVENTS},
	{"symbol", gonvml.FI_DEV_NVLINK_COUNT_SYMBOL_ERRORS},
	{"transmit_discards", gonvml.FI_DEV_NVLINK_COUNT_XMIT_DISCARDS},
}

// nvlinkAllLinks is the scopeId that sums an NVLink counter over all links.
const nvlinkAllLinks = math.MaxUint32

// nvlinkErrorRequests are the error fields to ask a GPU for: NVLink 5's
// aggregate counters on Blackwell and newer, the per-link totals before.
func (r *sampleReader) nvlinkErrorRequests() []gonvml.FieldValue {
	var req []gonvml.FieldValue
	if r.st.arch >= gonvml.DEVICE_ARCH_BLACKWELL && r.st.arch != gonvml.DEVICE_ARCH_UNKNOWN {
		for _, f := range nvlink5Errors {
			req = append(req, gonvml.FieldValue{FieldId: f.id, ScopeId: nvlinkAllLinks})
		}
		return req
	}
	for _, f := range nvlinkLegacyErrors {
		for _, l := range r.st.links {
			req = append(req, gonvml.FieldValue{FieldId: f.id, ScopeId: uint32(l)})
		}
	}
	return req
}

// nvlinkErrorType names an error field; "" for other fields.
func nvlinkErrorType(id uint32) string {
	for _, fs := range [][]nvlinkErrorField{nvlinkLegacyErrors, nvlink5Errors} {
		for _, f := range fs {
			if f.id == id {
				return f.typ
			}
		}
	}
	return ""
}

// fields reads the memory temperature, PCIe byte counters and NVLink
// traffic and error counters. Each value carries its own status: a field
// the GPU or driver does not know is NOT_SUPPORTED (or INVALID_ARGUMENT on
// drivers older than the field) and is simply absent.
func (r *sampleReader) fields() {
	if !r.b.has(symFieldValues) {
		return
	}
	req := []gonvml.FieldValue{{FieldId: fieldMemoryTemp}, {FieldId: fieldPCIeTx}, {FieldId: fieldPCIeRx}}
	for _, l := range r.st.links {
		req = append(req, gonvml.FieldValue{FieldId: fieldNVLinkTx, ScopeId: uint32(l)},
			gonvml.FieldValue{FieldId: fieldNVLinkRx, ScopeId: uint32(l)})
	}
	if len(r.st.links) > 0 {
		req = append(req, r.nvlinkErrorRequests()...)
	}
	if _, ok := read(r, symFieldValues, func() (struct{}, gonvml.Return) { return struct{}{}, r.h.GetFieldValues(req) }); !ok {
		return
	}
	var (
		pcie           gpu.PCIeSample
		pcieTx, pcieRx *uint64
		pcieBits       uint8
	)
	linkIndex := map[int]int{}
	if ic := r.s.Interconnect; ic != nil {
		for i, l := range ic.Links {
			linkIndex[l.Number] = i
		}
	}
	linkErrors := map[string]uint64{}
	var missing []string
	for _, fv := range req {
		switch ret := gonvml.Return(fv.NvmlReturn); ret {
		case gonvml.SUCCESS:
		case gonvml.ERROR_NOT_SUPPORTED, gonvml.ERROR_INVALID_ARGUMENT:
			// An NVLink error counter this GPU's architecture keeps must
			// not vanish silently: its errors would read as none.
			if typ := nvlinkErrorType(fv.FieldId); typ != "" && !slices.Contains(missing, typ) {
				missing = append(missing, typ)
				r.s.Errors = append(r.s.Errors, fmt.Sprintf("%s(field %d, scope %d): NVLink %s errors: %v",
					symFieldValues, fv.FieldId, int64(fv.ScopeId), typ, ret))
			}
			continue
		default:
			r.ok(fmt.Sprintf("%s(field %d, scope %d)", symFieldValues, fv.FieldId, fv.ScopeId), ret)
			if r.lost {
				return
			}
			if typ := nvlinkErrorType(fv.FieldId); typ != "" {
				missing = append(missing, typ)
			}
			continue
		}
		v, bits, ok := fieldUint(fv)
		if !ok {
			r.s.Errors = append(r.s.Errors, fmt.Sprintf("%s: field %d has value type %d, not an unsigned count", symFieldValues, fv.FieldId, fv.ValueType))
			if typ := nvlinkErrorType(fv.FieldId); typ != "" {
				missing = append(missing, typ)
			}
			continue
		}
		switch fv.FieldId {
		case fieldMemoryTemp:
			r.s.Temperatures = append(r.s.Temperatures, gpu.Temperature{Sensor: gpu.SensorMemory, Celsius: float64(v)})
		case fieldPCIeTx:
			pcieTx, pcieBits = ptr(v), bits
		case fieldPCIeRx:
			pcieRx, pcieBits = ptr(v), bits
		case fieldNVLinkTx, fieldNVLinkRx:
			i, ok := linkIndex[int(fv.ScopeId)]
			if !ok || v > math.MaxUint64/1024 {
				continue
			}
			if fv.FieldId == fieldNVLinkTx {
				r.s.Interconnect.Links[i].TransmitBytes = ptr(v * 1024)
			} else {
				r.s.Interconnect.Links[i].ReceiveBytes = ptr(v * 1024)
			}
		default:
			if typ := nvlinkErrorType(fv.FieldId); typ != "" {
				linkErrors[typ] += v
			}
		}
	}
	if len(linkErrors) > 0 && r.s.Interconnect != nil {
		for _, typ := range slices.Sorted(maps.Keys(linkErrors)) {
			if !slices.Contains(missing, typ) { // a partial sum is not the total
				r.s.Interconnect.Errors = append(r.s.Interconnect.Errors, gpu.ErrorCount{Type: typ, Count: linkErrors[typ]})
			}
		}
	}
	if r.pcieCountersUsable(pcieTx, pcieRx, pcieBits) {
		pcie.TransmitBytes, pcie.ReceiveBytes, pcie.ByteCounterBits = pcieTx, pcieRx, pcieBits
	}
	if pcie.TransmitBytes != nil || pcie.ReceiveBytes != nil {
		r.s.PCIe = &pcie
	}
}

// pcieCountersUsable reports whether the PCIe byte counters can be made
// running totals. nvml.h says of them only "Value can be wrapped"; the
// driver's own PCIe byte counters are 32 bits (open-gpu-kernel-modules,
// ctrl2080bus.h: NV2080_CTRL_BUS_GET_PEX_UTIL_COUNTERS_PARAMS.pexCounters
// is NvU32), whatever type NVML reports them in. A 32-bit byte counter
// wraps in well under a second at PCIe Gen4/Gen5 rates (2^32 bytes at
// 64 GB/s is 67 ms), several times between two samples, so no total can be
// made of it. The counters are used once a reading has shown them wider
// than 32 bits; until then, and where they are absent, pcie reads the rate
// from nvmlDeviceGetPcieThroughput instead.
func (r *sampleReader) pcieCountersUsable(tx, rx *uint64, bits uint8) bool {
	if (tx == nil && rx == nil) || (bits > 0 && bits <= 32) {
		return false
	}
	for _, v := range []*uint64{tx, rx} {
		if v != nil && *v >= 1<<32 {
			r.st.pcieWide = true
		}
	}
	return r.st.pcieWide
}

// fieldUint decodes a field value that holds a non-negative count, with
// the width the device keeps it in. Doubles and negative values are not counts.
func fieldUint(fv gonvml.FieldValue) (v uint64, bits uint8, ok bool) {
	b := fv.Value[:]
	switch gonvml.ValueType(fv.ValueType) {
	case gonvml.VALUE_TYPE_UNSIGNED_INT:
		return uint64(binary.NativeEndian.Uint32(b)), 32, true
	case gonvml.VALUE_TYPE_UNSIGNED_LONG, gonvml.VALUE_TYPE_UNSIGNED_LONG_LONG:
		return binary.NativeEndian.Uint64(b), 64, true
	case gonvml.VALUE_TYPE_UNSIGNED_SHORT:
		return uint64(binary.NativeEndian.Uint16(b)), 16, true
	case gonvml.VALUE_TYPE_SIGNED_LONG_LONG:
		if n := int64(binary.NativeEndian.Uint64(b)); n >= 0 {
			return uint64(n), 63, true
		}
	case gonvml.VALUE_TYPE_SIGNED_INT:
		if n := int32(binary.NativeEndian.Uint32(b)); n >= 0 {
			return uint64(n), 31, true
		}
	}
	return 0, 0, false
}
