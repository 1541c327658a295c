package health

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/nodestatus"
)

func TestThrottleReasonsSorted(t *testing.T) {
	if !slices.IsSorted(ThrottleReasons) {
		t.Errorf("ThrottleReasons not sorted: %v", ThrottleReasons)
	}
}

// The power cap, idle and the clock settings are normal under load and
// never count; an unsupported reason is not reported; a GPU that did not
// answer reports nothing.
func TestActiveThrottles(t *testing.T) {
	s := gpu.Sample{Up: true, ClockEventReasons: []gpu.ClockEventReason{
		{Reason: "gpu_idle", Active: true}, {Reason: "hw_slowdown"}, {Reason: "hw_thermal_slowdown", Active: true},
		{Reason: "sw_power_cap", Active: true}, {Reason: "sw_thermal_slowdown"}, {Reason: "ppt", Active: true},
		{Reason: "prochot", Active: true},
	}}
	reported, active := ActiveThrottles(s)
	if want := []string{"hw_slowdown", "hw_thermal_slowdown", "prochot", "sw_thermal_slowdown"}; !slices.Equal(reported, want) {
		t.Errorf("reported %v, want %v", reported, want)
	}
	if want := map[string]bool{"hw_slowdown": false, "hw_thermal_slowdown": true, "prochot": true, "sw_thermal_slowdown": false}; !reflect.DeepEqual(active, want) {
		t.Errorf("active %v, want %v", active, want)
	}
	s.Up = false
	if r, a := ActiveThrottles(s); r != nil || a != nil {
		t.Errorf("a silent GPU reports %v %v", r, a)
	}
}

func TestThrottles(t *testing.T) {
	began := at.Add(-5 * time.Minute)
	got := Throttles([]string{"hw_slowdown", "hw_thermal_slowdown", "sw_thermal_slowdown"},
		map[string]time.Time{"hw_thermal_slowdown": began, "sw_thermal_slowdown": at.Add(-time.Minute)}, at, 5*time.Minute)
	want := []Throttle{{Reason: "hw_slowdown"}, {Reason: "hw_thermal_slowdown", Since: began, Degraded: true},
		{Reason: "sw_thermal_slowdown", Since: at.Add(-time.Minute)}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if g := (GPU{Throttles: got}); !slices.Equal(g.DegradedReasons(), []string{"hw_thermal_slowdown"}) {
		t.Errorf("degraded reasons %v", g.DegradedReasons())
	}
	if got := Throttles(nil, nil, at, time.Minute); got != nil {
		t.Errorf("nothing reported: %v", got)
	}
}

// A Degraded GPU stays healthy: GPUHealthy stays True with its own reason
// and a message naming the GPU and when its reasons began; an unhealthy
// node keeps its reason and gains the note.
func TestWithDegraded(t *testing.T) {
	gpus := []GPU{
		{Index: 0, UUID: "GPU-a", Known: true, Healthy: true},
		{Index: 1, UUID: "GPU-b", Known: true, Healthy: true, Throttles: []Throttle{
			{Reason: "hw_slowdown"}, {Reason: "hw_thermal_slowdown", Since: at, Degraded: true}, {Reason: "sw_thermal_slowdown", Since: at}}},
	}
	c, _ := Condition(gpus, true)
	if c.Status != nodestatus.True || c.Reason != ReasonHealthy {
		t.Fatalf("Condition alone: %+v", c)
	}
	d := WithDegraded(c, gpus)
	if d.Status != nodestatus.True || d.Reason != ReasonDegraded {
		t.Errorf("degraded: %+v", d)
	}
	want := "2 GPUs healthy. 1 degraded (clocks held down, still working): GPU 1 (GPU-b): hw_thermal_slowdown since 2026-03-01T12:00:00Z"
	if d.Message != want {
		t.Errorf("message\n%q\nwant\n%q", d.Message, want)
	}
	if got := WithDegraded(c, gpus[:1]); got != c {
		t.Errorf("no degraded GPU changed the condition: %+v", got)
	}
	bad := nodestatus.Condition{Type: nodestatus.GPUHealthy, Status: nodestatus.False, Reason: ReasonXIDCritical, Message: "1 of 2 GPUs unhealthy: x"}
	if got := WithDegraded(bad, gpus); got.Status != nodestatus.False || got.Reason != ReasonXIDCritical || !strings.Contains(got.Message, "GPU 1 (GPU-b): hw_thermal") {
		t.Errorf("unhealthy and degraded: %+v", got)
	}
	if g := Evaluate([]Input{{Sample: up(0), LinksEverUp: []int{0}}})[0]; g.Throttles != nil || !g.Healthy {
		t.Errorf("Evaluate sets throttles: %+v", g)
	}
}
