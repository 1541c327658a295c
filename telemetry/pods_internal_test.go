package telemetry

import (
	"testing"

	"github.com/gpunode/gpunode/gpu"
	"github.com/gpunode/gpunode/podresources"
)

// bindPods names a UID only where a device leaves one candidate; pods that
// share every device they hold stay unnamed rather than guessed.
func TestBindPods(t *testing.T) {
	g := []gpu.Sample{{UUID: "GPU-a"}, {UUID: "GPU-b"}, {UUID: "GPU-c"}}
	devs := []device{{g: &g[0], key: "GPU-a"}, {g: &g[1], key: "GPU-b"}, {g: &g[2], key: "GPU-c"}}
	alloc := func(pod string) podresources.Allocation {
		return podresources.Allocation{Namespace: "ns", Pod: pod, Container: "c"}
	}
	pods := map[string][]podresources.Allocation{
		// p and q time-slice GPU a; p also holds GPU b alone.
		"GPU-a": {alloc("p"), alloc("q")},
		"GPU-b": {alloc("p")},
		// r and s time-slice GPU c and hold nothing else.
		"GPU-c": {alloc("r"), alloc("s")},
	}
	uids := [][]string{{"uid-q", "uid-p"}, {"uid-p"}, {"uid-r", "uid-s", ""}}
	got := bindPods(devs, uids, pods)
	want := map[string]podRef{"uid-p": {"ns", "p"}, "uid-q": {"ns", "q"}}
	if len(got) != len(want) {
		t.Fatalf("bound %v, want %v", got, want)
	}
	for u, r := range want {
		if got[u] != r {
			t.Errorf("%s bound to %v, want %v", u, got[u], r)
		}
	}
}

func TestHolder(t *testing.T) {
	a := []podresources.Allocation{{Namespace: "ns", Pod: "p", Container: "x"}, {Namespace: "ns", Pod: "p", Container: "y"},
		{Namespace: "ns", Pod: "q", Container: "z"}}
	if h := holder(a, podRef{"ns", "p"}); h != "" {
		t.Errorf("two containers of p hold the device: %q, want none named", h)
	}
	if h := holder(a, podRef{"ns", "q"}); h != "z" {
		t.Errorf("q: %q", h)
	}
}
