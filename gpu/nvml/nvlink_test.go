package nvml_test

import (
	"context"
	"encoding/binary"
	"slices"
	"strings"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/gpu/nvml"
	"github.com/gpunode/gpunode/gpu/nvml/nvmlfake"
)

func errorTypes(ic *gpu.InterconnectSample) []string {
	var types []string
	for _, e := range ic.Errors {
		types = append(types, e.Type)
	}
	return types
}

// Blackwell answers the pre-NVLink 5 error totals NOT_SUPPORTED; its
// errors come from the NVLink 5 counters, summed over links by the
// aggregate scope.
func TestBlackwellNVLinkErrors(t *testing.T) {
	lib, clk := clocked(t, nvmlfake.B200)
	b := nvml.New(lib)
	defer b.Close()
	s := sample(t, b)[0]
	if !s.Up || len(s.Errors) != 0 {
		t.Fatalf("B200 sample: up %v errors %v", s.Up, s.Errors)
	}
	want := []string{"buffer_overrun", "effective", "local_link_integrity", "malformed_packet", "receive", "receive_general",
		"receive_remote", "recovery", "recovery_failed", "symbol", "transmit_discards"}
	if got := errorTypes(s.Interconnect); !slices.Equal(got, want) {
		t.Fatalf("B200 NVLink error types %v, want %v", got, want)
	}
	// The aggregate is the sum of the links: symbol errors grow on every link.
	var symbol uint64
	for _, e := range s.Interconnect.Errors {
		if e.Type == "symbol" {
			symbol = e.Count
		}
	}
	h, _ := lib.DeviceGetHandleByIndex(0)
	var perLink uint64
	for link := range 18 {
		fv := []gonvml.FieldValue{{FieldId: gonvml.FI_DEV_NVLINK_COUNT_SYMBOL_ERRORS, ScopeId: uint32(link)}}
		if ret := h.GetFieldValues(fv); ret != gonvml.SUCCESS || fv[0].NvmlReturn != 0 {
			t.Fatalf("link %d: %v / %d", link, ret, fv[0].NvmlReturn)
		}
		perLink += binary.NativeEndian.Uint64(fv[0].Value[:])
	}
	if symbol == 0 || symbol != perLink {
		t.Errorf("symbol errors %d, per-link sum %d", symbol, perLink)
	}
	old := []gonvml.FieldValue{{FieldId: gonvml.FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL}, {FieldId: gonvml.FI_DEV_NVLINK_ECC_DATA_ERROR_COUNT_TOTAL}}
	h.GetFieldValues(old)
	for _, f := range old {
		if gonvml.Return(f.NvmlReturn) != gonvml.ERROR_NOT_SUPPORTED {
			t.Errorf("B200 field %d answered %d, want NOT_SUPPORTED", f.FieldId, f.NvmlReturn)
		}
	}

	// A counter the architecture should have but the driver does not
	// answer is reported, not silently left out.
	nvmlfake.SetFieldReturn(lib, 1, gonvml.FI_DEV_NVLINK_COUNT_SYMBOL_ERRORS, gonvml.ERROR_NOT_SUPPORTED)
	clk.Advance(time.Second) // GPM samples must be over 100 ms apart
	all, err := b.Sample(context.Background())
	if s = all[1]; err == nil || len(s.Errors) != 1 || !strings.Contains(s.Errors[0], "NVLink symbol errors") || !s.Up {
		t.Errorf("missing symbol counter: errors %v", s.Errors)
	}
	if slices.Contains(errorTypes(s.Interconnect), "symbol") {
		t.Error("the missing counter is exported")
	}
}

// Before Blackwell the error totals are per link (scopeId is the link)
// and the sample sums them over the links.
func TestHopperNVLinkErrorsSumLinks(t *testing.T) {
	lib, clk := clocked(t, nvmlfake.H100)
	b := nvml.New(lib)
	defer b.Close()
	s := sample(t, b)[0]
	if got := errorTypes(s.Interconnect); !slices.Equal(got, []string{"crc_data", "crc_flit", "ecc_data", "recovery", "replay"}) {
		t.Fatalf("H100 NVLink error types %v", got)
	}
	h, _ := lib.DeviceGetHandleByIndex(0)
	var sum uint64
	for link := range 18 {
		fv := []gonvml.FieldValue{{FieldId: gonvml.FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL, ScopeId: uint32(link)}}
		h.GetFieldValues(fv)
		sum += binary.NativeEndian.Uint64(fv[0].Value[:])
	}
	for _, e := range s.Interconnect.Errors {
		if e.Type == "replay" && e.Count != sum {
			t.Errorf("replay errors %d, want the sum of the links %d", e.Count, sum)
		}
	}
	// A counter that fails (UNKNOWN) is left out with the failure recorded:
	// a sum missing links would read as fewer errors.
	nvmlfake.SetFieldReturn(lib, 3, gonvml.FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL, gonvml.ERROR_UNKNOWN)
	nvmlfake.SetFieldReturn(lib, 2, gonvml.FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL, gonvml.ERROR_NOT_SUPPORTED)
	clk.Advance(time.Second) // GPM samples must be over 100 ms apart
	all, err := b.Sample(context.Background())
	if s := all[2]; err == nil || len(s.Errors) != 1 || !strings.Contains(s.Errors[0], "NVLink replay errors") {
		t.Errorf("missing replay counter: errors %v", s.Errors)
	}
	if s := all[3]; len(s.Errors) == 0 || slices.Contains(errorTypes(s.Interconnect), "crc_flit") {
		t.Errorf("failing crc_flit counter: errors %v, types %v", s.Errors, errorTypes(s.Interconnect))
	}
}

// A link whose state the driver does not give (NO_PERMISSION, UNKNOWN) is
// not known to exist: the enumeration is not cached and is done again.
func TestNVLinkEnumerationRetriedAfterFailure(t *testing.T) {
	lib, clk := clocked(t, nvmlfake.A100) // 12 links of NVML's 18
	b := nvml.New(lib)
	defer b.Close()
	nvmlfake.SetReturn(lib, 0, "nvmlDeviceGetNvLinkState", gonvml.ERROR_NO_PERMISSION)
	all, err := b.Sample(context.Background())
	if s := all[0]; err == nil || !s.Up || (s.Interconnect != nil && len(s.Interconnect.Links) != 0) {
		t.Fatalf("links not readable: err %v, interconnect %+v", err, s.Interconnect)
	}
	nvmlfake.SetReturn(lib, 0, "nvmlDeviceGetNvLinkState", gonvml.SUCCESS)
	clk.Advance(time.Second)
	s := sample(t, b)[0]
	if s.Interconnect == nil || len(s.Interconnect.Links) != 12 || s.Interconnect.ActiveLinks() != 12 {
		t.Errorf("links once readable: %+v", s.Interconnect)
	}
}
