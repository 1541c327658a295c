package tuning

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/internal/hostfs"
)

func TestSysctlPath(t *testing.T) {
	for key, want := range map[string]string{
		"net.core.rmem_max":                "/proc/sys/net/core/rmem_max",
		"net/ipv4/conf/eth0.100/rp_filter": "/proc/sys/net/ipv4/conf/eth0.100/rp_filter",
		"vm.swappiness":                    "/proc/sys/vm/swappiness",
	} {
		if got, err := SysctlPath(key); err != nil || got != want {
			t.Errorf("SysctlPath(%q) = %q, %v; want %q", key, got, err, want)
		}
	}
	for _, key := range []string{"", ".", "net..core", "net.core.", "../etc/passwd", "net/../../etc", "a b", "a\x00b", "/net/core"} {
		if got, err := SysctlPath(key); err == nil {
			t.Errorf("SysctlPath(%q) = %q, want an error", key, got)
		}
	}
}

func TestParseBracketed(t *testing.T) {
	if v, err := ParseBracketed("always [madvise] never"); err != nil || v != "madvise" {
		t.Errorf("got %q, %v", v, err)
	}
	for _, in := range []string{"", "always madvise", "[]", "[a] [b]", "a]b[c", "[x"} {
		if v, err := ParseBracketed(in); err == nil {
			t.Errorf("ParseBracketed(%q) = %q, want an error", in, v)
		}
	}
}

func TestObserve(t *testing.T) {
	root := t.TempDir()
	write := func(p, v string) {
		full := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		os.WriteFile(full, []byte(v), 0o644)
	}
	write("proc/sys/net/ipv4/tcp_rmem", "4096\t131072\t6291456\n")
	write("proc/sys/vm/swappiness", "60\n")
	write("proc/sys/vm/dirty_ratio", "\xff\xfe")
	write("sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n")
	fsys, err := hostfs.New(root)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Observe(context.Background(), fsys, []string{"net.ipv4.tcp_rmem", "vm.swappiness", "kernel.sched_migration_cost_ns", "vm.dirty_ratio"})
	if err == nil || !strings.Contains(err.Error(), "vm.dirty_ratio") {
		t.Fatalf("garbage value not reported: %v", err)
	}
	want := []Setting{
		{Kind: "sysctl", Key: "net.ipv4.tcp_rmem", Value: "4096 131072 6291456", Supported: true},
		{Kind: "sysctl", Key: "vm.swappiness", Value: "60", Supported: true},
		{Kind: "sysctl", Key: "kernel.sched_migration_cost_ns"},
		{Kind: "thp", Key: "transparent_hugepage.enabled", Value: "madvise", Supported: true},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("setting %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func FuzzSysctlPath(f *testing.F) {
	for _, s := range []string{"net.core.rmem_max", "net/ipv4/conf/eth0.1/x", "..", "a/../b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		p, err := SysctlPath(key)
		if err != nil {
			return
		}
		if !strings.HasPrefix(p, "/proc/sys/") || filepath.Clean(p) != p {
			t.Fatalf("SysctlPath(%q) = %q escapes or is not clean", key, p)
		}
	})
}

func FuzzParseBracketed(f *testing.F) {
	for _, s := range []string{"always [madvise] never", "[", "]", "[]x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if v, err := ParseBracketed(s); err == nil && (v == "" || strings.ContainsAny(v, "[]")) {
			t.Fatalf("ParseBracketed(%q) = %q", s, v)
		}
	})
}
