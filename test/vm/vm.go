// Package vm boots a Debian kernel in QEMU with a busybox initramfs, runs a
// shell script as root inside it and returns the script's output and exit
// status. It is how tests reach a real kernel: this machine's kernel has
// no RDMA, and tuning tests must not change the machine they run on.
//
// Everything comes from Debian packages, unpacked (never installed) into
// the cache (<cache>/debs, see tools.CacheDir): the kernel image and its
// modules (linux-image-amd64), busybox (busybox-static), and any package a
// test asks for (Package). QEMU itself is a host tool that scripts/deps.sh
// installs. KVM is not available here, so QEMU runs with TCG:
// -accel tcg,thread=multi -cpu max -machine q35; a boot to init takes
// about 4-5 s.
package vm

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gpunode/gpunode/test/tools"
)

// SoftRoCEModules are what soft-RoCE (rdma_rxe) needs; crc32_generic is
// used by rdma_rxe without being declared as a dependency.
var SoftRoCEModules = []string{"crc32_generic", "udp_tunnel", "ip6_udp_tunnel", "ib_core", "ib_uverbs", "rdma_rxe"}

// NICModules drive the virtio-net NICs; Run loads them when Config.NICs is
// not empty.
var NICModules = []string{"virtio_pci", "virtio_net"}

// NUMANode is one guest NUMA node.
type NUMANode struct {
	CPUs      int
	MemoryMiB int
}

// NIC is a virtio-net NIC on QEMU's user-mode network (no access to the
// outside), or on a wire to another VM (Socket). Guest interfaces are
// named eth0, eth1, ... in Config.NICs order.
type NIC struct {
	// NUMANode puts the NIC behind its own PCIe host bridge (pxb-pcie)
	// bound to that node, so the guest reports it in numa_node; -1 puts it
	// on the main root complex (numa_node -1).
	NUMANode int
	// SpeedMbps is what the guest reads from /sys/class/net/ethN/speed;
	// 0 leaves it unknown (-1).
	SpeedMbps int
	// IPv4 is an address with prefix ("10.0.2.15/24") configured at
	// boot. Every NIC is brought up (a down virtio link has no speed).
	IPv4 string
	// Socket, when set, cables the NIC to another VM's instead of the
	// user-mode network: "listen=127.0.0.1:PORT" on one VM and
	// "connect=127.0.0.1:PORT" on the other (QEMU's socket netdev; the
	// listening VM must start first).
	Socket string
	// MAC overrides the NIC's address, which is otherwise the same in
	// every VM: two VMs on one wire need different ones.
	MAC string
}

// File is a file placed in the initramfs.
type File struct {
	// Path in the guest.
	Path string
	// Data, or HostPath to copy from.
	Data     []byte
	HostPath string
	Mode     fs.FileMode
	// Libraries copies the shared libraries of HostPath (an executable)
	// along, as for Config.Binaries.
	Libraries bool
}

// Config describes one VM run.
type Config struct {
	// NUMA lays out CPUs and memory; empty means one node with CPUs and
	// MemoryMiB below.
	NUMA      []NUMANode
	CPUs      int
	MemoryMiB int
	NICs      []NIC
	// Modules are loaded at boot in this order, each after its
	// dependencies (read from the modules' .modinfo).
	Modules []string
	// ExtraModules are put in the initramfs but not loaded, so the kernel
	// can load them on demand (through /sbin/modprobe) or the script can.
	ExtraModules []string
	// Binaries are host executables copied to /usr/bin with their shared
	// libraries (ldd) and the dynamic loader.
	Binaries []string
	// LibraryPath are extra directories (unpacked packages) where ldd
	// finds the binaries' libraries.
	LibraryPath []string
	Files       []File
	// Cmdline is appended to the kernel command line.
	Cmdline string
	// Systemd boots systemd (from Debian's systemd package) as PID 1
	// instead of busybox init, for tests that talk to systemd over D-Bus;
	// systemctl is in /bin. Units and drop-ins go in Files
	// (/etc/systemd/system/...). The script runs as a oneshot service of
	// the boot target, without default dependencies, so no other unit
	// starts unless the script starts it. Costs about a second of boot.
	Systemd bool
	// Script runs under busybox sh as root in / after /proc, /sys, /dev
	// and /tmp are mounted, the modules loaded and the NICs configured.
	Script string
	// Timeout bounds the whole run (default 3 minutes), not counting the
	// wait for Exclusive.
	Timeout time.Duration
	// Exclusive runs this VM alone: it waits for the test VMs of every
	// test binary to end and holds new ones back until it is done. For
	// runs that compare timings (ours against perftest): two TCG VMs on
	// two cores, as go test runs packages side by side, make such a
	// comparison noise (ours 0.78 x perftest in CI, 1.0 alone).
	Exclusive bool
	// LockHeld says the caller holds the machine-wide VM lock already
	// (from Alone), for VMs that must run together and alone: Run then
	// takes no lock of its own.
	LockHeld bool
}

// Result is what a run produced.
type Result struct {
	// Output is the script's standard output and error.
	Output   string
	ExitCode int
	// Console is the kernel console, for diagnosing a failed boot.
	Console string
	// BootSeconds is the guest's uptime when the script started.
	BootSeconds float64
	// Wall is the time the whole run took on this machine.
	Wall time.Duration
}

// lockVMs holds a machine-wide lock while a VM runs: shared for ordinary
// runs (several may run at once, as twoVMs needs), exclusive for
// Config.Exclusive.
func lockVMs(exclusive bool) (unlock func(), err error) {
	unlock, err = tools.Flock(filepath.Join(os.TempDir(), "gpunode-vm.lock"), exclusive)
	if err != nil {
		return nil, fmt.Errorf("VM lock: %w", err)
	}
	return unlock, nil
}

// Alone waits until no other test VM runs and holds new ones back until
// unlock is called: for a group of VMs that talk to each other with
// timeouts of their own (two soft-RoCE nodes: a TCG guest descheduled for
// half a second under other VMs exceeds an RDMA retry budget). Their
// Configs set LockHeld.
func Alone() (unlock func(), err error) { return lockVMs(true) }

const exitMarker = "GPUNODE_VM_EXIT="
const startMarker = "GPUNODE_VM_START="

// Run boots the VM, runs the script and powers off. An error means the VM
// did not run the script to the end (boot failure, timeout); the script's
// own failure is Result.ExitCode.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Timeout == 0 {
		cfg.Timeout = 3 * time.Minute
	}
	qemu, err := QEMU()
	if err != nil {
		return Result{}, err
	}
	kernel, err := DebianKernel()
	if err != nil {
		return Result{}, err
	}
	busybox, err := Busybox()
	if err != nil {
		return Result{}, err
	}
	work, err := os.MkdirTemp("", "gpunode-vm-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(work)
	initrd := filepath.Join(work, "initrd.cpio")
	if err := buildInitramfs(initrd, cfg, kernel, busybox); err != nil {
		return Result{}, err
	}
	args, err := qemuArgs(cfg, kernel.Image, initrd, work)
	if err != nil {
		return Result{}, err
	}
	if !cfg.LockHeld {
		unlock, err := lockVMs(cfg.Exclusive)
		if err != nil {
			return Result{}, err
		}
		defer unlock()
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, qemu, args...)
	var qout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &qout, &qout
	runErr := cmd.Run()
	res := Result{Wall: time.Since(start)}
	console, _ := os.ReadFile(filepath.Join(work, "console.log"))
	output, _ := os.ReadFile(filepath.Join(work, "output.log"))
	res.Console = string(console)
	res.Output, res.ExitCode, res.BootSeconds = parseOutput(string(output))
	switch {
	case ctx.Err() != nil:
		return res, fmt.Errorf("VM did not finish within %s; console tail:\n%s", cfg.Timeout, tail(res.Console, 3000))
	case runErr != nil:
		return res, fmt.Errorf("qemu: %w: %s; console tail:\n%s", runErr, qout.String(), tail(res.Console, 3000))
	case res.ExitCode < 0:
		return res, fmt.Errorf("the script did not finish (no exit status); console tail:\n%s", tail(res.Console, 3000))
	}
	return res, nil
}

var exitLine = regexp.MustCompile(`(?m)^` + exitMarker + `(\d+)\r?$`)
var startLine = regexp.MustCompile(`(?m)^` + startMarker + `([0-9.]+)[^\n]*\n`)

// parseOutput splits the serial output into the script's output, its exit
// status (-1 when missing) and the boot time.
func parseOutput(s string) (out string, code int, boot float64) {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	code = -1
	if m := startLine.FindStringSubmatchIndex(s); m != nil {
		boot, _ = strconv.ParseFloat(s[m[2]:m[3]], 64)
		s = s[m[1]:]
	}
	if m := exitLine.FindStringSubmatchIndex(s); m != nil {
		code, _ = strconv.Atoi(s[m[2]:m[3]])
		s = s[:m[0]]
	}
	return s, code, boot
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// qemuArgs builds the QEMU command line. -nodefaults drops QEMU's default
// NIC, VGA and serial so the guest has exactly the devices configured.
func qemuArgs(cfg Config, image, initrd, work string) ([]string, error) {
	cpus, mem := cfg.CPUs, cfg.MemoryMiB
	var numa []string
	if len(cfg.NUMA) > 0 {
		cpus, mem = 0, 0
		for i, n := range cfg.NUMA {
			if n.CPUs < 1 || n.MemoryMiB < 64 {
				return nil, fmt.Errorf("NUMA node %d: want at least 1 CPU and 64 MiB", i)
			}
			numa = append(numa,
				"-object", fmt.Sprintf("memory-backend-ram,id=m%d,size=%dM", i, n.MemoryMiB),
				"-numa", fmt.Sprintf("node,nodeid=%d,memdev=m%d,cpus=%d-%d", i, i, cpus, cpus+n.CPUs-1))
			cpus += n.CPUs
			mem += n.MemoryMiB
		}
	}
	if cpus < 1 {
		cpus = 1
	}
	if mem == 0 {
		mem = 1024
	}
	append_ := "console=ttyS0 quiet loglevel=4 panic=-1 " + cfg.Cmdline
	args := []string{
		"-machine", "q35", "-accel", "tcg,thread=multi", "-cpu", "max",
		"-smp", strconv.Itoa(cpus), "-m", strconv.Itoa(mem) + "M",
		"-nodefaults", "-display", "none", "-monitor", "none", "-no-reboot",
		"-serial", "file:" + filepath.Join(work, "console.log"),
		"-serial", "file:" + filepath.Join(work, "output.log"),
		"-kernel", image, "-initrd", initrd, "-append", strings.TrimSpace(append_),
	}
	args = append(args, numa...)
	for i, n := range cfg.NICs {
		bus := "pcie.0"
		if n.NUMANode >= 0 {
			if n.NUMANode >= max(len(cfg.NUMA), 1) {
				return nil, fmt.Errorf("NIC %d: NUMA node %d does not exist", i, n.NUMANode)
			}
			bus = fmt.Sprintf("pxb%d", i)
			args = append(args, "-device", fmt.Sprintf("pxb-pcie,id=%s,bus_nr=%d,numa_node=%d,bus=pcie.0", bus, 0x80+0x10*i, n.NUMANode))
		}
		args = append(args,
			"-device", fmt.Sprintf("pcie-root-port,id=rp%d,bus=%s,chassis=%d", i, bus, i+1),
			"-netdev", netdev(i, n))
		mac := n.MAC
		if mac == "" {
			mac = fmt.Sprintf("52:54:00:12:34:%02x", 0x56+i)
		}
		dev := fmt.Sprintf("virtio-net-pci,bus=rp%d,netdev=net%d,mac=%s", i, i, mac)
		if n.SpeedMbps > 0 {
			dev += fmt.Sprintf(",speed=%d,duplex=full", n.SpeedMbps)
		}
		args = append(args, "-device", dev)
	}
	return args, nil
}

// netdev is QEMU's -netdev value for NIC i.
func netdev(i int, n NIC) string {
	if n.Socket != "" {
		return fmt.Sprintf("socket,id=net%d,%s", i, n.Socket)
	}
	return fmt.Sprintf("user,id=net%d,restrict=on", i)
}

// buildInitramfs writes the initramfs: busybox, /init, the modules with a
// modules.dep, the binaries with their libraries, the files and the script.
func buildInitramfs(dest string, cfg Config, k Kernel, busybox string) error {
	f, err := os.Create(dest)
	if err != nil {
		return err
	}
	defer f.Close()
	a := newArchive(f)
	for _, d := range []string{"/proc", "/sys", "/dev", "/tmp", "/run", "/var/lib", "/etc", "/root", "/usr/bin", "/usr/sbin", "/sbin"} {
		if err := a.mkdirAll(d); err != nil {
			return err
		}
	}
	if err := a.hostFile("/bin/busybox", busybox); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	load := cfg.Modules
	if len(cfg.NICs) > 0 {
		load = append(append([]string{}, NICModules...), load...)
	}
	mods, err := resolveModules(k.Modules, append(append([]string{}, load...), cfg.ExtraModules...))
	if err != nil {
		return err
	}
	modRoot := "/lib/modules/" + k.Version
	for _, rel := range mods.order {
		if err := a.hostFile(modRoot+"/"+rel, filepath.Join(k.Modules, rel)); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
	}
	if err := a.file(modRoot+"/modules.dep", []byte(mods.modulesDep()), 0o644); err != nil {
		return err
	}
	for _, name := range []string{"modules.builtin", "modules.order"} {
		if err := a.hostFile(modRoot+"/"+name, filepath.Join(k.Modules, name)); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
	}
	// Load order: the listed modules, each preceded by its dependencies.
	loadSet, err := resolveModules(k.Modules, load)
	if err != nil {
		return err
	}
	files := cfg.Files
	libPath := cfg.LibraryPath
	for _, bin := range cfg.Binaries {
		files = append(files, File{Path: "/usr/bin/" + filepath.Base(bin), HostPath: bin, Libraries: true})
	}
	if cfg.Systemd {
		sd, err := systemdFiles()
		if err != nil {
			return err
		}
		files = append(files, sd.files...)
		libPath = append(libPath, sd.libPath...)
	}
	for _, file := range files {
		mode := file.Mode
		if mode == 0 {
			mode = 0o644
		}
		data := file.Data
		if file.HostPath != "" {
			if data, err = os.ReadFile(file.HostPath); err != nil {
				return fmt.Errorf("initramfs: %w", err)
			}
		}
		if file.HostPath != "" && file.Mode == 0 {
			if st, err := os.Stat(file.HostPath); err == nil {
				mode = st.Mode()
			}
		}
		if err := a.file(file.Path, data, mode); err != nil {
			return err
		}
		if !file.Libraries {
			continue
		}
		libs, err := sharedLibraries(file.HostPath, libPath)
		if err != nil {
			return err
		}
		for _, lib := range libs {
			// Found in an unpacked package: install it where the
			// package would.
			guest := lib
			for _, dir := range libPath {
				if root := packageRoot(dir); root != "" && strings.HasPrefix(lib, root+"/") {
					guest = strings.TrimPrefix(lib, root)
				}
			}
			if err := a.hostFile(guest, lib); err != nil {
				return fmt.Errorf("initramfs: library: %w", err)
			}
		}
	}
	if err := a.file("/script.sh", []byte(cfg.Script), 0o755); err != nil {
		return err
	}
	run := runScript(loadSet.order, cfg.NICs)
	if cfg.Systemd {
		if err := a.file("/gpunode-run.sh", []byte(run), 0o755); err != nil {
			return err
		}
		if err := a.file("/init", []byte(systemdInit), 0o755); err != nil {
			return err
		}
	} else if err := a.file("/init", []byte(busyboxInit+run), 0o755); err != nil {
		return err
	}
	if err := a.close(); err != nil {
		return err
	}
	return f.Close()
}

// busyboxInit starts PID 1 under busybox: the pseudo file systems, then
// runScript.
const busyboxInit = `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/usr/bin:/usr/sbin:/bin:/sbin HOME=/root
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
`

// systemdInit hands PID 1 to systemd after busybox's links are in place;
// systemd mounts /sys, /dev and /run itself and starts gpunode.target.
const systemdInit = `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
exec /lib/systemd/systemd --unit=gpunode.target --log-target=console --log-level=warning
`

// runScript loads the modules, configures the NICs, runs the script with
// its output on the second serial port, reports its exit status and
// powers off (busybox's poweroff -f calls reboot(2) directly, under
// systemd too).
func runScript(modules []string, nics []NIC) string {
	var b strings.Builder
	b.WriteString(`#!/bin/busybox sh
export PATH=/usr/bin:/usr/sbin:/bin:/sbin HOME=/root
mount -t tmpfs tmpfs /tmp
out=/dev/ttyS1
`)
	for _, rel := range modules {
		fmt.Fprintf(&b, "insmod /lib/modules/$(uname -r)/%s || echo 'insmod %s failed' > $out\n", rel, path.Base(rel))
	}
	b.WriteString("ip link set lo up\n")
	for i, n := range nics {
		if n.IPv4 != "" {
			fmt.Fprintf(&b, "ip addr add %s dev eth%d || echo 'eth%d: address failed' > $out\n", n.IPv4, i, i)
		}
		fmt.Fprintf(&b, "ip link set eth%d up || echo 'eth%d: up failed' > $out\n", i, i)
	}
	b.WriteString(`echo "` + startMarker + `$(cut -d' ' -f1 /proc/uptime)" > $out
cd /
sh /script.sh > $out 2>&1 < /dev/null
rc=$?
echo "` + exitMarker + `$rc" > $out
sync
poweroff -f
`)
	return b.String()
}
