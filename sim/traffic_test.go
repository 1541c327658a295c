package sim

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func readCounter(t *testing.T, root, dev, file string) uint64 {
	t.Helper()
	sub := "counters"
	if _, ok := roceRates[file]; ok {
		sub = "hw_counters"
	}
	b, err := os.ReadFile(filepath.Join(root, "sys/class/infiniband", dev, "ports/1", sub, file))
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestTrafficMovesCounters(t *testing.T) {
	n, err := Build("h100-roce", shmDir(t))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	tr, err := NewTraffic(n, start)
	if err != nil {
		t.Fatal(err)
	}
	before := map[string]uint64{}
	for _, f := range []string{"port_xmit_data", "np_cnp_sent", "link_downed"} {
		before[f] = readCounter(t, n.Root, "mlx5_3", f)
	}
	if err := tr.Advance(start.Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	rate, ok := tr.Rate("mlx5_3", 1, "port_xmit_data")
	if !ok || rate < 1.25e9 || rate > 3.75e9 {
		t.Fatalf("rate %v %v", rate, ok)
	}
	if got := readCounter(t, n.Root, "mlx5_3", "port_xmit_data") - before["port_xmit_data"]; got != uint64(rate*10) {
		t.Errorf("port_xmit_data grew by %d in 10 s, want %d", got, uint64(rate*10))
	}
	if readCounter(t, n.Root, "mlx5_3", "np_cnp_sent") <= before["np_cnp_sent"] {
		t.Error("CNPs did not move on a RoCE port")
	}
	if readCounter(t, n.Root, "mlx5_3", "link_downed") != before["link_downed"] {
		t.Error("link_downed moved")
	}
	// Time going back changes nothing.
	moved := readCounter(t, n.Root, "mlx5_3", "port_xmit_data")
	if err := tr.Advance(start.Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if readCounter(t, n.Root, "mlx5_3", "port_xmit_data") != moved {
		t.Error("a counter went back")
	}
	// Nothing but the counters is left in the counter directories.
	h := newHost(t, n.Root)
	port := "/sys/class/infiniband/mlx5_3/ports/1"
	if c, hw := h.names(port+"/counters"), h.names(port+"/hw_counters"); !slices.Equal(c, wantCounters()) || !slices.Equal(hw, wantHWCounters()) {
		t.Errorf("counters %v, hw_counters %v", c, hw)
	}
}

func TestTrafficOnInfiniBandHasNoCNPs(t *testing.T) {
	n, err := Build("dgx-h100-ib", shmDir(t))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewTraffic(n, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tr.Rate("mlx5_0", 1, "np_cnp_sent"); ok {
		t.Error("CNPs move on an InfiniBand port")
	}
	if _, ok := tr.Rate("mlx5_0", 1, "port_rcv_data"); !ok {
		t.Error("no data traffic on mlx5_0")
	}
	cpu, err := Build("cpu-only", shmDir(t))
	if err != nil {
		t.Fatal(err)
	}
	if tr, err := NewTraffic(cpu, time.Now()); err != nil || len(tr.files) != 0 {
		t.Errorf("cpu-only traffic: %v %v", tr, err)
	}
}

// shmDir is a temporary directory on tmpfs where there is one: a tree
// builds there in milliseconds rather than seconds.
func shmDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "gpunode-test-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
