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
	dirs, libPath, files, err := vm.SoftRoCEGuest(guestPackages)
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
		Files:  files,
		Script: script,
	}
}
