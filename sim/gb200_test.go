package sim

import (
	"strings"
	"testing"
)

// TestGB200NVL checks what makes the GB200 tray a Grace node in a
// multi-node NVLink domain: an aarch64 kernel and driver, one NUMA node per
// Grace CPU without SMT, four GB200 GPUs in one registered clique, and the
// IMEX channel, config and daemon.
func TestGB200NVL(t *testing.T) {
	node, err := Build("gb200-nvl", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := newHost(t, node.Root)
	for path, want := range map[string]string{
		"/proc/version":               "aarch64-linux-gnu-gcc",
		"/proc/driver/nvidia/version": "Open Kernel Module for aarch64  580.126.09  ",
		"/proc/devices":               "\n508 nvidia-caps-imex-channels\n",
		"/etc/nvidia-imex/config.cfg": "IMEX_NODE_CONFIG_FILE=/etc/nvidia-imex/nodes_config.cfg",
	} {
		if got := h.read(path); !strings.Contains(got, want) {
			t.Errorf("%s = %q, want it to contain %q", path, got, want)
		}
	}
	for node, cpus := range map[string]string{"node0": "0-71", "node1": "72-143"} {
		if got := h.read("/sys/devices/system/node/" + node + "/cpulist"); got != cpus {
			t.Errorf("%s CPUs %s, want %s", node, got, cpus)
		}
	}
	if got := h.read("/sys/devices/system/cpu/online"); got != "0-143" {
		t.Errorf("online CPUs %s", got)
	}
	if n := len(strings.Fields(h.read("/etc/nvidia-imex/nodes_config.cfg"))); n != 18 {
		t.Errorf("IMEX domain of %d nodes, want the 18 trays of an NVL72", n)
	}
	if !h.fs.Exists("/dev/nvidia-caps-imex-channels/channel0") {
		t.Error("no IMEX channel 0")
	}
	imexd := false
	for _, p := range h.names("/proc") {
		if c, err := h.fs.ReadString("/proc/" + p + "/comm"); err == nil && c == "nvidia-imex" {
			imexd = true
		}
	}
	if !imexd {
		t.Error("nvidia-imex is not running")
	}
	m := node.NVIDIA
	if m.FabricCluster == [16]byte{} || m.FabricClique != 4026 {
		t.Errorf("fabric cluster %x clique %d, want a cluster UUID and clique 4026", m.FabricCluster, m.FabricClique)
	}
	for i, g := range m.GPUs {
		if want := i / 2; g.NUMANode != want {
			t.Errorf("GPU %d on NUMA node %d, want Grace %d", i, g.NUMANode, want)
		}
		if g.FabricNotStarted {
			t.Errorf("GPU %d fabric not started", i)
		}
	}
}
