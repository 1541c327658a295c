package nodestatus

import (
	"strings"
	"testing"

	"github.com/gpunode/gpunode/internal/source"
)

func TestDiscovery(t *testing.T) {
	c := Discovery([]source.Status{{Name: "topology", State: source.OK}, {Name: "nvml", State: source.Absent, Message: "no library"}, {Name: "rdma", State: source.OK}})
	if c.Status != True || c.Reason != "SourcesOK" || c.Message != "all 3 discovery sources ran; absent (no such hardware or library): nvml" {
		t.Errorf("healthy: %+v", c)
	}
	c = Discovery([]source.Status{{Name: "topology", State: source.OK}, {Name: "rdma", State: source.Error, Message: "timed out after 10s"}, {Name: "nvml", State: source.Error, Message: "GPU is lost"}})
	if c.Status != False || c.Reason != "SourceFailed" || c.Message != "nvml: GPU is lost; rdma: timed out after 10s" {
		t.Errorf("failing: %+v", c)
	}
	c = Discovery([]source.Status{{Name: "x", State: source.Error, Message: strings.Repeat("e", 5000)}})
	if len(c.Message) != maxMessage || !strings.HasSuffix(c.Message, "...") {
		t.Errorf("long message kept at %d bytes", len(c.Message))
	}
}

func TestChangeEvent(t *testing.T) {
	if e := ChangeEvent(Condition{Type: GPUHealthy, Status: True, Reason: "AllGood", Message: "8 GPUs healthy"}); e.Type != Normal || e.Reason != "AllGood" || e.Message != "GPUHealthy is True: 8 GPUs healthy" {
		t.Errorf("%+v", e)
	}
	if e := ChangeEvent(Condition{Type: RDMAReady, Status: Unknown, Reason: "NoProbe"}); e.Type != Warning || e.Message != "RDMAReady is Unknown" {
		t.Errorf("%+v", e)
	}
}

func TestTaintString(t *testing.T) {
	for _, tc := range []struct {
		t    Taint
		want string
	}{
		{Taint{Key: "gpunode.dev/gpu-unhealthy", Value: "XIDCritical", Effect: "NoSchedule"}, "gpunode.dev/gpu-unhealthy=XIDCritical:NoSchedule"},
		{Taint{Key: "k", Effect: "NoExecute"}, "k:NoExecute"},
	} {
		if got := tc.t.String(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.t, got, tc.want)
		}
	}
}
