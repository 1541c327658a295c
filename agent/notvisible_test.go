package agent

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/snapshot"
)

// GPUs the agent may not open are logged when the set changes, not on
// every discovery.
func TestNotVisibleGPUsLoggedOnce(t *testing.T) {
	logs := &syncBuffer{}
	d := &daemon{log: slog.New(slog.NewTextHandler(logs, nil))}
	hidden := &snapshot.Snapshot{GPUDriver: &snapshot.GPUDriver{Backend: "nvml", GPUsNotVisible: []int{3, 6}}}
	all := &snapshot.Snapshot{GPUDriver: &snapshot.GPUDriver{Backend: "nvml"}}
	d.logNotVisible(all)
	for range 3 {
		d.logNotVisible(hidden)
	}
	d.logNotVisible(all)
	d.logNotVisible(all)
	out := logs.String()
	if n := strings.Count(out, "GPUs not visible to the agent"); n != 1 || !strings.Contains(out, "gpus=\"[3 6]\"") {
		t.Errorf("%d warnings:\n%s", n, out)
	}
	if n := strings.Count(out, "visible to the agent again"); n != 1 {
		t.Errorf("%d all-visible lines:\n%s", n, out)
	}
}
