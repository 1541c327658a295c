package health

import (
	"reflect"
	"testing"
	"time"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/nodestatus"
)

func up(i int) gpu.Sample {
	return gpu.Sample{Index: i, UUID: "GPU-" + string(rune('a'+i)), Up: true,
		ECC:          []gpu.ECCCount{{Type: "uncorrected", Scope: "aggregate", Count: 7}, {Type: "uncorrected", Scope: "volatile"}},
		RemappedRows: &gpu.RemappedRows{Correctable: 2},
		Interconnect: &gpu.InterconnectSample{Kind: "nvlink", Links: []gpu.Link{{Number: 0, Up: true}, {Number: 1, Up: false}, {Number: 2, Up: false}}},
	}
}

var at = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestEvaluate(t *testing.T) {
	for name, tc := range map[string]struct {
		in      Input
		healthy bool
		known   bool
		reasons []string
	}{
		// Aggregate ECC from the GPU's past and links never up are fine.
		"healthy": {Input{Sample: up(0), LinksEverUp: []int{0}}, true, true, nil},
		"lost": {Input{Sample: gpu.Sample{Index: 1, Lost: true}}, false, true,
			[]string{ReasonGPULost}},
		"not answering": {Input{Sample: gpu.Sample{Index: 1, Errors: []string{"timed out"}}}, false, false, nil},
		"silent but a critical XID was seen": {Input{Sample: gpu.Sample{Index: 1},
			CriticalXIDs: []XIDSeen{{XID: 119, Count: 1, Last: at}}}, false, true, []string{ReasonXIDCritical}},
		"link that was up is down": {Input{Sample: up(0), LinksEverUp: []int{0, 2}}, false, true, []string{ReasonNVLinkDown}},
		"volatile uncorrectable ECC": {Input{Sample: func() gpu.Sample {
			s := up(0)
			s.ECC[1].Count, s.ECC[1].Current = 2, 2
			return s
		}()}, false, true, []string{ReasonUncorrectableECC}},
		// The driver reloaded: its volatile count restarted at 0 while the
		// exported counter kept the errors from before.
		"volatile uncorrectable ECC cleared by a driver reload": {Input{Sample: func() gpu.Sample {
			s := up(0)
			s.ECC[1].Count, s.ECC[1].Current = 2, 0
			return s
		}(), LinksEverUp: []int{0}}, true, true, nil},
		"remap pending and failed, ordered by severity": {Input{Sample: func() gpu.Sample {
			s := up(0)
			s.RemappedRows.Pending, s.RemappedRows.Failed = true, true
			return s
		}(), CriticalXIDs: []XIDSeen{{XID: 48, Count: 3, Last: at}, {XID: 63, Count: 1, Last: at}}}, false, true,
			[]string{ReasonXIDCritical, ReasonXIDCritical, ReasonRowRemapFailed, ReasonRowRemapPending}},
	} {
		t.Run(name, func(t *testing.T) {
			g := Evaluate([]Input{tc.in})[0]
			var reasons []string
			for _, p := range g.Problems {
				reasons = append(reasons, p.Reason)
				if p.Message == "" {
					t.Errorf("problem %s without a message", p.Reason)
				}
			}
			if g.Healthy != tc.healthy || g.Known != tc.known || !reflect.DeepEqual(reasons, tc.reasons) {
				t.Errorf("got healthy %v known %v reasons %v, want %v %v %v", g.Healthy, g.Known, reasons, tc.healthy, tc.known, tc.reasons)
			}
		})
	}
	g := Evaluate([]Input{{Sample: up(0), CriticalXIDs: []XIDSeen{{XID: 48, Count: 3, Last: at}}}})[0]
	if want := "XID 48 3 times, last at 2026-03-01T12:00:00Z"; g.Problems[0].Message != want {
		t.Errorf("message %q, want %q", g.Problems[0].Message, want)
	}
}

func TestCondition(t *testing.T) {
	healthy := GPU{Index: 0, UUID: "GPU-a", Known: true, Healthy: true}
	silent := GPU{Index: 1, UUID: "GPU-b"}
	lost := GPU{Index: 2, UUID: "GPU-c", Known: true, Problems: []Problem{{ReasonGPULost, "fell off the bus"}}}
	link := GPU{Index: 3, UUID: "GPU-d", Known: true, Problems: []Problem{{ReasonNVLinkDown, "nvlink link(s) 4 down"}}}

	for name, tc := range map[string]struct {
		gpus    []GPU
		sampled bool
		want    nodestatus.Condition
		ok      bool
	}{
		"no GPUs":     {nil, true, nodestatus.Condition{}, false},
		"not sampled": {nil, false, nodestatus.Condition{Type: "GPUHealthy", Status: "Unknown", Reason: "NoGPUSamples", Message: "GPUs have not been sampled yet"}, true},
		"all healthy": {[]GPU{healthy, healthy}, true, nodestatus.Condition{Type: "GPUHealthy", Status: "True", Reason: "AllGPUsHealthy", Message: "2 GPUs healthy"}, true},
		"silent": {[]GPU{healthy, silent}, true, nodestatus.Condition{Type: "GPUHealthy", Status: "Unknown", Reason: "GPUNotResponding",
			Message: "GPU(s) 1 did not answer the last sampling round"}, true},
		"most severe reason wins": {[]GPU{link, healthy, lost, silent}, true, nodestatus.Condition{Type: "GPUHealthy", Status: "False", Reason: "GPULost",
			Message: "2 of 4 GPUs unhealthy: GPU 3 (GPU-d): nvlink link(s) 4 down. GPU 2 (GPU-c): fell off the bus"}, true},
	} {
		t.Run(name, func(t *testing.T) {
			got, ok := Condition(tc.gpus, tc.sampled)
			if got != tc.want || ok != tc.ok {
				t.Errorf("Condition = %+v %v\nwant %+v %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestTaintFor(t *testing.T) {
	bad := nodestatus.Condition{Type: nodestatus.GPUHealthy, Status: nodestatus.False, Reason: ReasonXIDCritical}
	on := TaintOptions{Enabled: true, Key: "gpunode.dev/gpu-unhealthy"}
	if got := TaintFor(bad, on); got == nil || *got != (Taint{Key: "gpunode.dev/gpu-unhealthy", Value: "XIDCritical", Effect: "NoSchedule"}) {
		t.Errorf("taint %+v", got)
	}
	on.Effect = "NoExecute"
	if got := TaintFor(bad, on); got == nil || got.Effect != "NoExecute" {
		t.Errorf("taint %+v", got)
	}
	for _, c := range []nodestatus.Condition{
		{Type: nodestatus.GPUHealthy, Status: nodestatus.True},
		{Type: nodestatus.GPUHealthy, Status: nodestatus.Unknown},
		{Type: "RDMAReady", Status: nodestatus.False},
	} {
		if got := TaintFor(c, on); got != nil {
			t.Errorf("%+v tainted: %+v", c, got)
		}
	}
	if got := TaintFor(bad, TaintOptions{Key: "k"}); got != nil {
		t.Errorf("taint while disabled: %+v", got)
	}
	for _, x := range DefaultCriticalXIDs {
		if x == 13 || x == 31 || x == 43 {
			t.Errorf("application XID %d in the default critical list", x)
		}
	}
}

// Problems reported from outside the GPU library (the kernel log, AER
// counters) make an answering GPU unhealthy, take their place in the
// severity order, and stay when the GPU is silent.
func TestReportedProblems(t *testing.T) {
	in := Input{Sample: gpu.Sample{Index: 3, UUID: "GPU-3", Up: true}, Reported: []Problem{
		{Reason: ReasonPCIeError, Message: "1 fatal PCIe AER error (kernel log, last at 2026-12-07T01:00:00Z)"},
		{Reason: ReasonGPULost, Message: "fell off the bus (kernel log)"},
	}}
	g := Evaluate([]Input{in})[0]
	if g.Healthy || len(g.Problems) != 2 || g.Problems[0].Reason != ReasonGPULost || g.Problems[1].Reason != ReasonPCIeError {
		t.Fatalf("%+v", g)
	}
	c, _ := Condition([]GPU{g}, true)
	if c.Status != "False" || c.Reason != ReasonGPULost {
		t.Errorf("condition %+v", c)
	}
	in.Sample.Up = false
	if g := Evaluate([]Input{in})[0]; !g.Known || g.Healthy {
		t.Errorf("silent GPU with reported problems: %+v", g)
	}
}
