package vm

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseLdd(t *testing.T) {
	libs, err := parseLdd(`	linux-vdso.so.1 (0x00007ffd5e3f2000)
	libmnl.so.0 => /lib/x86_64-linux-gnu/libmnl.so.0 (0x00007f2fa5be3000)
	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2fa59df000)
	/lib64/ld-linux-x86-64.so.2 (0x00007f2fa5c31000)
	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2fa59df000)
`)
	want := []string{"/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libmnl.so.0", "/lib64/ld-linux-x86-64.so.2"}
	if err != nil || !slices.Equal(libs, want) {
		t.Errorf("parseLdd = %v, %v", libs, err)
	}
	if _, err := parseLdd("\tlibibverbs.so.1 => not found\n"); err == nil || !strings.Contains(err.Error(), "libibverbs.so.1") {
		t.Errorf("missing library: %v", err)
	}
}

func TestParseOutput(t *testing.T) {
	out, code, boot := parseOutput("GPUNODE_VM_START=4.52 0.10\r\nhello\r\nGPUNODE_VM_EXIT=3\r\n")
	if out != "hello\n" || code != 3 || boot != 4.52 {
		t.Errorf("parseOutput = %q %d %v", out, code, boot)
	}
	if _, code, _ := parseOutput("GPUNODE_VM_START=1\npartial"); code != -1 {
		t.Errorf("no exit line: code %d", code)
	}
}

// The archive is read back by a real cpio (busybox's).
func TestArchive(t *testing.T) {
	bb, err := Busybox()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	a := newArchive(&buf)
	if err := a.file("/usr/bin/hello", []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	a.symlink("/bin/sh", "busybox")
	a.mkdirAll("/var/lib/gpunode")
	if err := a.file("/usr/bin/hello", nil, 0o644); err == nil {
		t.Error("a second file at one path was accepted")
	}
	if err := a.close(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(bb, "cpio", "-i", "-d")
	cmd.Dir, cmd.Stdin = dir, &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "usr/bin/hello")); err != nil || string(b) != "#!/bin/sh\necho hi\n" {
		t.Errorf("extracted file: %q %v", b, err)
	}
	if st, err := os.Stat(filepath.Join(dir, "usr/bin/hello")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("mode: %v %v", st, err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "bin/sh")); err != nil || target != "busybox" {
		t.Errorf("symlink: %q %v", target, err)
	}
	if st, err := os.Stat(filepath.Join(dir, "var/lib/gpunode")); err != nil || !st.IsDir() {
		t.Errorf("directory: %v", err)
	}
}

// Module dependencies come from the modules themselves; modules.dep lists
// them as depmod does.
func TestResolveModules(t *testing.T) {
	k, err := DebianKernel()
	if err != nil {
		t.Fatal(err)
	}
	set, err := resolveModules(k.Modules, SoftRoCEModules)
	if err != nil {
		t.Fatal(err)
	}
	pos := func(name string) int {
		return slices.IndexFunc(set.order, func(rel string) bool { return strings.HasSuffix(rel, "/"+name+".ko") })
	}
	for _, m := range SoftRoCEModules {
		if pos(m) < 0 {
			t.Errorf("%s not resolved: %v", m, set.order)
		}
	}
	if !(pos("ib_core") < pos("ib_uverbs") && pos("ib_uverbs") < pos("rdma_rxe") && pos("udp_tunnel") < pos("rdma_rxe")) {
		t.Errorf("load order %v", set.order)
	}
	dep := set.modulesDep()
	var rxe string
	for line := range strings.Lines(dep) {
		if strings.HasPrefix(line, "kernel/drivers/infiniband/sw/rxe/rdma_rxe.ko:") {
			rxe = line
		}
	}
	if !strings.Contains(rxe, "ib_uverbs.ko") || !strings.HasSuffix(strings.TrimSpace(rxe), "ib_core.ko") {
		t.Errorf("modules.dep line for rdma_rxe: %q", rxe)
	}
	if _, err := resolveModules(k.Modules, []string{"no_such_module"}); err == nil {
		t.Error("unknown module accepted")
	}
}

// One boot exercises what tests rely on: NUMA layout, a NIC on node 1
// with its speed, the soft-RoCE modules and an rxe device on eth0, a
// package binary with its libraries, files, and the exit status.
func TestBoot(t *testing.T) {
	iproute, err := Package("iproute2")
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), Config{
		NUMA:     []NUMANode{{CPUs: 1, MemoryMiB: 384}, {CPUs: 1, MemoryMiB: 384}},
		NICs:     []NIC{{NUMANode: -1, IPv4: "10.0.2.15/24"}, {NUMANode: 1, SpeedMbps: 200000}},
		Modules:  SoftRoCEModules,
		Binaries: []string{filepath.Join(iproute, "usr/bin/rdma")},
		Files:    []File{{Path: "/etc/gpunode/hello", Data: []byte("hello\n")}},
		Script: `
cat /sys/devices/system/node/online
cat /sys/class/net/eth1/device/../numa_node /sys/class/net/eth1/speed
cat /sys/class/net/eth0/device/../numa_node
rdma link add rxe0 type rxe netdev eth0 && cat /sys/class/infiniband/rxe0/ports/1/link_layer
cat /etc/gpunode/hello
exit 7
`,
		Timeout: 3 * time.Minute,
	})
	t.Logf("boot to init %.1fs, whole run %s", res.BootSeconds, res.Wall.Round(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if want := "0-1\n1\n200000\n-1\nEthernet\nhello\n"; res.Output != want || res.ExitCode != 7 {
		t.Errorf("output %q exit %d, want %q exit 7\nconsole:\n%s", res.Output, res.ExitCode, want, tail(res.Console, 2000))
	}
	if res.BootSeconds <= 0 || res.BootSeconds > 60 {
		t.Errorf("boot time %.1fs", res.BootSeconds)
	}
}

func TestParseModinfoDepends(t *testing.T) {
	for in, want := range map[string]string{
		"license=GPL\x00depends=ib_core,ib_uverbs,udp-tunnel\x00intree=Y\x00": "ib_core ib_uverbs udp_tunnel",
		"depends=\x00name=x\x00":          "",
		"":                                "",
		"\x00\x00depends=,a,,b, \x00":     "a b",
		"dependsX=a\x00depends=b\x00\xff": "b",
	} {
		if got := strings.Join(parseModinfoDepends([]byte(in)), " "); got != want {
			t.Errorf("parseModinfoDepends(%q) = %q, want %q", in, got, want)
		}
	}
}
