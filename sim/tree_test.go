package sim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTreeWrites(t *testing.T) {
	tr := newTree()
	tr.attr("/sys/devices/pci0000:15/0000:15:01.0/class", "0x060400")
	tr.link("/sys/bus/pci/devices/0000:15:01.0", "/sys/devices/pci0000:15/0000:15:01.0")
	// A link to an ancestor names it, as sysfs does.
	tr.link("/sys/devices/pci0000:15/0000:15:01.0/infiniband/mlx5_0/device", "/sys/devices/pci0000:15/0000:15:01.0")
	tr.file("/dev/infiniband/rdma_cm", "")
	tr.dir("/sys/class/net")
	tr.dir("/sys/class/net")
	root := t.TempDir()
	if err := tr.write(root); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{
		"sys/bus/pci/devices/0000:15:01.0":                             "../../../devices/pci0000:15/0000:15:01.0",
		"sys/devices/pci0000:15/0000:15:01.0/infiniband/mlx5_0/device": "../../../0000:15:01.0",
	} {
		if got, err := os.Readlink(filepath.Join(root, p)); err != nil || got != want {
			t.Errorf("%s -> %q %v, want %q", p, got, err, want)
		}
	}
	if b, err := os.ReadFile(filepath.Join(root, "sys/bus/pci/devices/0000:15:01.0/class")); err != nil || string(b) != "0x060400\n" {
		t.Errorf("class through the link = %q %v", b, err)
	}
	if st, err := os.Stat(filepath.Join(root, "sys/class/net")); err != nil || !st.IsDir() {
		t.Errorf("empty dir: %v", err)
	}
}

func TestTreeRejectsMistakes(t *testing.T) {
	for name, tc := range map[string]struct {
		add  func(*tree)
		want string
	}{
		"twice":         {func(tr *tree) { tr.file("/a", "1"); tr.file("/a", "2") }, "/a written twice"},
		"under a file":  {func(tr *tree) { tr.file("/a", "1"); tr.file("/a/b", "2") }, "parent /a is not a directory"},
		"dir over file": {func(tr *tree) { tr.file("/a", "1"); tr.dir("/a") }, "/a written twice"},
		"relative":      {func(tr *tree) { tr.file("a/b", "") }, `bad host path "a/b"`},
		"unclean":       {func(tr *tree) { tr.file("/a/../b", "") }, "bad host path"},
		"root":          {func(tr *tree) { tr.dir("/") }, "bad host path"},
	} {
		tr := newTree()
		tc.add(tr)
		err := tr.write(t.TempDir())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", name, err, tc.want)
		}
	}
}

func TestTreeWriteFails(t *testing.T) {
	tr := newTree()
	tr.file("/a/b", "x")
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "a"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := tr.write(root); err == nil {
		t.Fatal("writing over an existing file succeeded")
	}
}

// tiny gives a builder a one-node, two-CPU machine.
func tiny(b *builder) {
	b.system(system{sockets: 1, cores: 2, threads: 1, memKB: []uint64{1 << 20}})
}

// The builder catches description mistakes before anything is written.
func TestBuilderRejectsMistakes(t *testing.T) {
	for name, tc := range map[string]struct {
		describe func(b *builder)
		want     string
	}{
		"bus twice": {func(b *builder) {
			tiny(b)
			b.rootPort(0x15, 1, 0x16, 0)
			b.rootPort(0x20, 1, 0x16, 0)
		}, "bus 0x16 used by both"},
		"overlapping ranges": {func(b *builder) {
			tiny(b)
			sw := b.newSwitch(0x15, 0) // buses 0x15-0x17 and on
			b.endpoint(sw.port(0x1b), 0, h100SXM())
			b.rootPort(0x19, 1, 0x1a, 0) // inside 0x15's range
		}, "overlapping bus ranges"},
		"secondary below": {func(b *builder) {
			tiny(b)
			b.rootPort(0x15, 1, 0x10, 0)
		}, "not above its own bus"},
		"endpoint parent": {func(b *builder) {
			tiny(b)
			d := b.endpoint(b.rootPort(0x15, 1, 0x16, 0), 0, h100SXM())
			b.endpoint(d, 0, h100SXM())
		}, "is not a bridge"},
		"module order": {func(b *builder) {
			b.system(system{sockets: 1, cores: 2, threads: 1, memKB: []uint64{1 << 20},
				modules: []module{{name: "ib_core"}, {name: "mlx5_ib", deps: []string{"ib_core"}}}})
		}, "module mlx5_ib needs ib_core, which is not loaded before it"},
		"memory per node": {func(b *builder) {
			b.system(system{sockets: 2, cores: 2, threads: 1, memKB: []uint64{1 << 20}})
		}, "2 sockets but memory for 1 nodes"},
		"unknown irq driver": {func(b *builder) {
			tiny(b)
			id := h100SXM()
			id.driver = "nouveau"
			b.endpoint(b.rootPort(0x15, 1, 0x16, 0), 0, id).irqs(false, "nouveau")
		}, `no interrupt order for driver "nouveau"`},
	} {
		b := newBuilder("test")
		tc.describe(b)
		err := b.finish()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", name, err, tc.want)
		}
	}
}
