package amdsmi

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/gpunode/gpunode/gpu"
)

func ptr[T any](v T) *T { return &v }

// Sample reads every GPU AMD SMI lists. A GPU whose calls fail is still
// returned, with the failures on Errors; a GPU seen before that is no
// longer listed is reported down.
func (b *Backend) Sample(ctx context.Context) ([]gpu.Sample, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	handles, err := b.gpus()
	if err != nil {
		return nil, err
	}
	var out []gpu.Sample
	var errs []error
	for i, h := range handles {
		if err := ctx.Err(); err != nil {
			s := b.known[i]
			s.Index, s.Time, s.Up, s.Errors = i, b.now(), false, []string{"timed out: " + err.Error()}
			out = append(out, s)
			continue
		}
		s := b.sampleGPU(i, h)
		for _, e := range s.Errors {
			errs = append(errs, fmt.Errorf("gpu %d: %s", i, e))
		}
		out = append(out, s)
	}
	for i := len(handles); ; i++ {
		s, ok := b.known[i]
		if !ok {
			break
		}
		s.Time, s.Up, s.Lost, s.Errors = b.now(), false, true, []string{"AMD SMI no longer lists the GPU"}
		out = append(out, s)
	}
	return out, errors.Join(errs...)
}

func (b *Backend) sampleGPU(i int, h C.amdsmi_processor_handle) gpu.Sample {
	var errs []error
	s := gpu.Sample{Index: i, Time: b.now(), Up: true}
	var asic *C.smi_asic_t
	s.PCIBusID, s.UUID, asic = b.identity(h, &errs)
	if asic != nil {
		s.Product = cstr(&asic.market_name[0], len(asic.market_name))
	}
	if len(errs) > 0 && s.PCIBusID == "" {
		// The GPU does not answer even for its identity: keep the one
		// it had and report it down.
		prev := b.known[i]
		prev.Time, prev.Up = s.Time, false
		for _, e := range errs {
			prev.Errors = append(prev.Errors, e.Error())
		}
		return prev
	}
	b.known[i] = gpu.Sample{Index: i, UUID: s.UUID, PCIBusID: s.PCIBusID, Product: s.Product}

	var act C.amdsmi_engine_usage_t
	if call(&errs, "amdsmi_get_gpu_activity", C.smi_activity(b.lib, h, &act)) {
		if v := uint32(act.gfx_activity); v <= 100 {
			s.Utilization = ptr(float64(v) / 100)
		}
		if v := uint32(act.umc_activity); v <= 100 {
			s.MemoryUtilization = ptr(float64(v) / 100)
		}
	}
	var total, used C.uint64_t
	okT := call(&errs, "amdsmi_get_gpu_memory_total", C.smi_mem_total(b.lib, h, &total))
	okU := call(&errs, "amdsmi_get_gpu_memory_usage", C.smi_mem_usage(b.lib, h, &used))
	if okT {
		s.MemoryTotalBytes = ptr(uint64(total))
	}
	if okU {
		s.MemoryUsedBytes = ptr(uint64(used))
	}
	if okT && okU && used <= total {
		s.MemoryFreeBytes = ptr(uint64(total - used))
	}
	var pw C.smi_power_t
	if call(&errs, "amdsmi_get_power_info", C.smi_power(b.lib, h, &pw)) {
		// Watts; MI300 reports current power, older GPUs the average.
		for _, w := range []uint32{uint32(pw.current_socket_power), uint32(pw.average_socket_power)} {
			if w != 0 && w != 0xffff && w != 0xffffffff {
				s.PowerWatts = ptr(float64(w))
				break
			}
		}
	}
	var acc C.uint64_t
	var res C.float
	if call(&errs, "amdsmi_get_energy_count", C.smi_energy(b.lib, h, &acc, &res)) && res > 0 {
		// The accumulator counts units of resolution microjoules.
		s.EnergyMillijoules = ptr(uint64(float64(acc) * float64(res) / 1000))
	}
	for _, t := range []struct {
		sensor C.uint32_t
		name   string
	}{{C.AMDSMI_TEMPERATURE_TYPE_EDGE, gpu.SensorEdge}, {C.AMDSMI_TEMPERATURE_TYPE_HOTSPOT, gpu.SensorGPU}, {C.AMDSMI_TEMPERATURE_TYPE_VRAM, gpu.SensorMemory}} {
		var c C.int64_t
		if call(&errs, "amdsmi_get_temp_metric", C.smi_temp(b.lib, h, t.sensor, &c)) && c > 0 && c < 1000 {
			s.Temperatures = append(s.Temperatures, gpu.Temperature{Sensor: t.name, Celsius: float64(c)})
		}
	}
	slices.SortFunc(s.Temperatures, func(x, y gpu.Temperature) int { return strings.Compare(x.Sensor, y.Sensor) })
	for _, c := range []struct {
		clk  C.uint32_t
		name string
	}{{C.AMDSMI_CLK_TYPE_GFX, gpu.ClockGraphics}, {C.AMDSMI_CLK_TYPE_MEM, gpu.ClockMemory}} {
		var ci C.amdsmi_clk_info_t
		if call(&errs, "amdsmi_get_clock_info", C.smi_clock(b.lib, h, c.clk, &ci)) && ci.clk != 0 && uint32(ci.clk) != 0xffffffff {
			s.Clocks = append(s.Clocks, gpu.Clock{Clock: c.name, Hertz: float64(ci.clk) * 1e6})
		}
	}
	var replays C.uint64_t
	if call(&errs, "amdsmi_get_gpu_pci_replay_counter", C.smi_replay(b.lib, h, &replays)) {
		s.PCIe = &gpu.PCIeSample{ReplayErrors: ptr(uint64(replays))}
	}
	var ecc C.amdsmi_error_count_t
	if call(&errs, "amdsmi_get_gpu_total_ecc_count", C.smi_ecc(b.lib, h, &ecc)) {
		s.ECC = []gpu.ECCCount{
			{Type: gpu.ECCCorrected, Scope: gpu.ECCVolatile, Count: uint64(ecc.correctable_count)},
			{Type: gpu.ECCUncorrected, Scope: gpu.ECCVolatile, Count: uint64(ecc.uncorrectable_count)},
		}
	}
	if links, ok := b.links(h, &errs); ok && len(links) > 0 {
		ic := &gpu.InterconnectSample{Kind: gpu.XGMI}
		for n, l := range links {
			ic.Links = append(ic.Links, gpu.Link{
				Number: n, Up: l.bit_rate > 0,
				// Kilobytes of 1024 bytes; read is what the GPU received.
				ReceiveBytes: ptr(uint64(l.read) * 1024), TransmitBytes: ptr(uint64(l.write) * 1024),
			})
		}
		s.Interconnect = ic
	}
	b.throttle(&s, &errs)
	for _, e := range errs {
		s.Errors = append(s.Errors, e.Error())
	}
	return s
}
