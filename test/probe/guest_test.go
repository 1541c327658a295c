package probe_test

import (
	"path/filepath"
	"testing"

	"github.com/gpunode/gpunode/test/tools"
	"github.com/gpunode/gpunode/test/vm"
)

// buildAgent builds gpunode-agent; the VM gets it with its shared
// libraries.
func buildAgent(t testing.TB) string {
	t.Helper()
	bin, err := tools.BuildAgent(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// guestPackages are unpacked (never installed) for the guest: perftest,
// rdma-core's user space with the rxe provider, and the rdma tool.
var guestPackages = []string{"perftest", "libibverbs1", "ibverbs-providers", "librdmacm1", "libibumad3", "libpci3", "libnl-3-200", "libnl-route-3-200", "iproute2"}

// machine is a VM with soft-RoCE, the agent, perftest's ib_write_bw and
// ib_send_lat, and libibverbs with the rxe provider, which the agent
// loads with dlopen (so ldd does not bring it along).
func machine(t testing.TB, script string) vm.Config {
	t.Helper()
	dirs := map[string]string{}
	var libPath []string
	for _, p := range guestPackages {
		d, err := vm.Package(p)
		if err != nil {
			t.Fatal(err)
		}
		dirs[p] = d
		libPath = append(libPath, filepath.Join(d, "usr/lib/x86_64-linux-gnu"), filepath.Join(d, "lib/x86_64-linux-gnu"))
	}
	libs := "usr/lib/x86_64-linux-gnu/"
	verbsLib, err := filepath.EvalSymlinks(filepath.Join(dirs["libibverbs1"], libs, "libibverbs.so.1"))
	if err != nil {
		t.Fatal(err)
	}
	return vm.Config{
		CPUs:        2,
		MemoryMiB:   1024,
		NICs:        []vm.NIC{{NUMANode: -1, IPv4: "10.0.2.15/24"}},
		Modules:     append(append([]string{}, vm.SoftRoCEModules...), "veth"),
		LibraryPath: libPath,
		Binaries: []string{
			buildAgent(t),
			filepath.Join(dirs["perftest"], "usr/bin/ib_write_bw"),
			filepath.Join(dirs["perftest"], "usr/bin/ib_send_lat"),
			filepath.Join(dirs["iproute2"], "usr/bin/rdma"),
			filepath.Join(dirs["iproute2"], "bin/ip"),
		},
		Files: []vm.File{
			{Path: "/" + libs + "libibverbs.so.1", HostPath: verbsLib, Libraries: true},
			{Path: "/" + libs + "libibverbs/librxe-rdmav34.so", HostPath: filepath.Join(dirs["ibverbs-providers"], libs, "libibverbs/librxe-rdmav34.so"), Libraries: true},
			{Path: "/etc/libibverbs.d/rxe.driver", HostPath: filepath.Join(dirs["ibverbs-providers"], "etc/libibverbs.d/rxe.driver")},
		},
		Script: script,
	}
}
