package verify

import (
	"strings"
	"testing"

	"github.com/gpunode/gpunode/nodestatus"
)

func TestCondition(t *testing.T) {
	s := good()
	c := Condition(Run(s, Options{ExpectedGPUCount: 2}))
	if c.Type != "GPUNodeVerified" || c.Status != nodestatus.True || c.Reason != "ChecksPassed" || !strings.Contains(c.Message, "checks passed") {
		t.Errorf("good node: %+v", c)
	}
	s.GPUs[1].PCIeLink.CurrentWidth = 8
	s.GPUs[0].Fabric.State = "not-started"
	c = Condition(Run(s, Options{ExpectedGPUCount: 2}))
	want := "2 failed: gpu-pcie-link gpu1: Gen5 x8 in P0 (expected Gen5 x16); nvswitch-fabric gpu0: not-started, success (expected completed, success)"
	if c.Status != nodestatus.False || c.Reason != "ChecksFailed" || c.Message != want {
		t.Errorf("degraded node: %+v\nwant message %q", c, want)
	}
	for i := range 40 { // many failures: the message stays one bounded line
		s.GPUs = append(s.GPUs, s.GPUs[1])
		s.GPUs[len(s.GPUs)-1].Index = 2 + i
	}
	if c := Condition(Run(s, Options{})); len(c.Message) > maxMessage || !strings.HasSuffix(c.Message, "...") {
		t.Errorf("long message: %d bytes", len(c.Message))
	}
}

func TestEvents(t *testing.T) {
	o := Options{ExpectedGPUCount: 2}
	s := good()
	first := Run(s, o)
	if ev := Events(nil, first); len(ev) != 0 {
		t.Errorf("a clean first report raised %v", ev)
	}
	s.GPUs[1].Interconnect.Active = 17
	s.GPUs[0].ECC.Enabled = false
	second := Run(s, o)
	ev := Events(&first, second)
	if len(ev) != 2 || ev[0].Type != nodestatus.Warning || ev[0].Reason != "CheckFailed" || !strings.HasPrefix(ev[0].Message, "nvlink gpu1 fail: 17/18 active") ||
		ev[1].Reason != "CheckWarning" || !strings.HasPrefix(ev[1].Message, "gpu-ecc gpu0 warn") {
		t.Errorf("events %+v", ev)
	}
	if ev := Events(&second, second); len(ev) != 0 {
		t.Errorf("unchanged report raised %v", ev)
	}
	if ev := Events(nil, second); len(ev) != 2 {
		t.Errorf("first report with findings: %v", ev)
	}
	s.GPUs[1].Interconnect.Active = 18
	third := Run(s, o)
	ev = Events(&second, third)
	if len(ev) != 1 || ev[0].Type != nodestatus.Normal || ev[0].Reason != "CheckPassed" || !strings.HasPrefix(ev[0].Message, "nvlink gpu1 is pass now (was fail)") {
		t.Errorf("recovery events %+v", ev)
	}
}
