package labels

import (
	"testing"

	"github.com/gpunode/gpunode/internal/source"
)

// With probes on, hardware.llm-d.ai/rdma=enabled needs a verified round;
// with them off it follows discovery, and rdma.verified is absent.
func TestRDMAProbeGate(t *testing.T) {
	s := nvidiaSnap(source.OK, source.OK)
	off := Compute(Inputs{Snapshot: s}, all())
	if off["hardware.llm-d.ai/rdma"] != "enabled" {
		t.Fatalf("without probes: %v", off.Lines())
	}
	if _, ok := off["d.io/rdma.verified"]; ok {
		t.Error("rdma.verified written with probes off")
	}
	failed := Compute(Inputs{Snapshot: s, RDMAProbe: &RDMAProbe{Verified: false}}, all())
	if _, ok := failed["hardware.llm-d.ai/rdma"]; ok || failed["d.io/rdma.verified"] != "false" {
		t.Errorf("failed probes: rdma=%q verified=%q", failed["hardware.llm-d.ai/rdma"], failed["d.io/rdma.verified"])
	}
	pending := Compute(Inputs{Snapshot: s, RDMAProbe: &RDMAProbe{Pending: true}}, all())
	if _, ok := pending["hardware.llm-d.ai/rdma"]; ok {
		t.Error("the llm-d gate opened before the first round")
	}
	if _, ok := pending["d.io/rdma.verified"]; ok {
		t.Error("rdma.verified written before the first round")
	}
	passed := Compute(Inputs{Snapshot: s, RDMAProbe: &RDMAProbe{Verified: true}}, all())
	if passed["hardware.llm-d.ai/rdma"] != "enabled" || passed["d.io/rdma.verified"] != "true" {
		t.Errorf("passed probes: rdma=%q verified=%q", passed["hardware.llm-d.ai/rdma"], passed["d.io/rdma.verified"])
	}
}

// With probes on, gpudirect-rdma follows the registration of GPU memory
// on each GPU's nearest NIC once it was tried; before that, and with
// probes off, the modules decide.
func TestGPUDirectFollowsRegistration(t *testing.T) {
	s := nvidiaSnap(source.OK, source.OK)
	modules := Compute(Inputs{Snapshot: s}, all())["d.io/gpudirect-rdma"]
	if modules == "" {
		t.Fatal("no gpudirect-rdma label from the modules")
	}
	no, yes := false, true
	for _, tc := range []struct {
		probe *RDMAProbe
		want  string
	}{
		{nil, modules},
		{&RDMAProbe{Pending: true}, modules},
		{&RDMAProbe{Verified: true}, modules},
		{&RDMAProbe{Verified: true, GPUDirect: &no}, "false"},
		{&RDMAProbe{Verified: false, GPUDirect: &yes}, "true"},
	} {
		if got := Compute(Inputs{Snapshot: s, RDMAProbe: tc.probe}, all())["d.io/gpudirect-rdma"]; got != tc.want {
			t.Errorf("probe %+v: gpudirect-rdma=%q, want %q", tc.probe, got, tc.want)
		}
	}
}
