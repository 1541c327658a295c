package nvml

import (
	"encoding/binary"
	"fmt"
	"math"

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

// nvlinkErrorFields are the all-link totals, sorted by type name.
var nvlinkErrorFields = []struct {
	typ string
	id  uint32
}{
	{"crc_data", gonvml.FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL},
	{"crc_flit", gonvml.FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL},
	{"ecc_data", gonvml.FI_DEV_NVLINK_ECC_DATA_ERROR_COUNT_TOTAL},
	{"recovery", gonvml.FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL},
	{"replay", gonvml.FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL},
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
		for _, f := range nvlinkErrorFields {
			req = append(req, gonvml.FieldValue{FieldId: f.id})
		}
	}
	if _, ok := read(r, symFieldValues, func() (struct{}, gonvml.Return) { return struct{}{}, r.h.GetFieldValues(req) }); !ok {
		return
	}
	var pcie gpu.PCIeSample
	linkIndex := map[int]int{}
	if ic := r.s.Interconnect; ic != nil {
		for i, l := range ic.Links {
			linkIndex[l.Number] = i
		}
	}
	for _, fv := range req {
		switch ret := gonvml.Return(fv.NvmlReturn); ret {
		case gonvml.SUCCESS:
		case gonvml.ERROR_NOT_SUPPORTED, gonvml.ERROR_INVALID_ARGUMENT:
			continue
		default:
			r.ok(fmt.Sprintf("%s(field %d, scope %d)", symFieldValues, fv.FieldId, fv.ScopeId), ret)
			if r.lost {
				return
			}
			continue
		}
		v, bits, ok := fieldUint(fv)
		if !ok {
			r.s.Errors = append(r.s.Errors, fmt.Sprintf("%s: field %d has value type %d, not an unsigned count", symFieldValues, fv.FieldId, fv.ValueType))
			continue
		}
		switch fv.FieldId {
		case fieldMemoryTemp:
			r.s.Temperatures = append(r.s.Temperatures, gpu.Temperature{Sensor: gpu.SensorMemory, Celsius: float64(v)})
		case fieldPCIeTx:
			pcie.TransmitBytes, pcie.ByteCounterBits = ptr(v), bits
		case fieldPCIeRx:
			pcie.ReceiveBytes, pcie.ByteCounterBits = ptr(v), bits
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
			for _, f := range nvlinkErrorFields {
				if f.id == fv.FieldId {
					r.s.Interconnect.Errors = append(r.s.Interconnect.Errors, gpu.ErrorCount{Type: f.typ, Count: v})
				}
			}
		}
	}
	if pcie.TransmitBytes != nil || pcie.ReceiveBytes != nil {
		r.s.PCIe = &pcie
	}
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
