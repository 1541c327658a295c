// Package hwcheck_test runs the hardware conformance harness on a real
// kernel with soft-RoCE, so its RDMA comparisons meet the real ibv_devinfo
// and rdma tools (rdma-core, iproute2) and perftest rather than recorded
// text.
package hwcheck_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/hwcheck"
	"github.com/gpunode/gpunode/test/tools"
	"github.com/gpunode/gpunode/test/vm"
)

// guestPackages are unpacked (never installed) for the guest: rdma-core's
// user space with the rxe provider, ibv_devinfo, the rdma tool, and
// perftest (with the libraries its binaries link).
var guestPackages = []string{"libibverbs1", "ibverbs-providers", "ibverbs-utils", "libnl-3-200", "libnl-route-3-200", "iproute2",
	"perftest", "librdmacm1", "libibumad3", "libpci3"}

const script = `
rdma link add rxe0 type rxe netdev eth0
# eth0's SLAAC address (fec0::, from QEMU's router advertisement) adds a
# GID a few seconds after boot: wait for it (10 s at most), so the agent's
# inspect and ibv_devinfo, run seconds apart, read the same GID table.
i=0
while [ "$(cat /sys/class/infiniband/rxe0/ports/1/gids/2)" = 0000:0000:0000:0000:0000:0000:0000:0000 ] && [ $i -lt 100 ]; do
	sleep 0.1; i=$((i + 1))
done
echo "== hwcheck"; gpunode-hwcheck --agent=/usr/bin/gpunode-agent --out=/tmp/hw --agent.sample-interval=1s --perftest.rounds=2 --perftest.iterations=1000; echo "== rc $?"
echo "== report"; cat /tmp/hw/report.json; echo "== end"
echo "== ibv"; cat /tmp/hw/ibv_devinfo-v.txt; echo "== end"
echo "== rdma-link"; cat /tmp/hw/rdma-link.txt; echo "== end"
echo "== inspect"; cat /tmp/hw/inspect.json; echo "== end"
for f in /tmp/hw/probe-loopback-1.json /tmp/hw/ib_write_bw-rxe0-1-1.txt /tmp/hw/ib_send_lat-rxe0-1-1.txt; do
	echo "== raw ${f##*/}"; cat $f; echo "== end"
done
`

func TestHarnessOnSoftRoCE(t *testing.T) {
	dir := t.TempDir()
	agent, err := tools.BuildAgent(dir)
	if err != nil {
		t.Fatal(err)
	}
	harness := filepath.Join(dir, "gpunode-hwcheck")
	cmd := exec.Command("go", "build", "-o", harness, "github.com/gpunode/gpunode/cmd/gpunode-hwcheck")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the harness: %v\n%s", err, out)
	}
	dirs, libPath, files, err := vm.SoftRoCEGuest(guestPackages)
	if err != nil {
		t.Fatal(err)
	}
	res, err := vm.Run(context.Background(), vm.Config{
		CPUs:        2,
		MemoryMiB:   1024,
		NICs:        []vm.NIC{{NUMANode: -1, IPv4: "10.0.2.15/24"}},
		Modules:     vm.SoftRoCEModules,
		LibraryPath: libPath,
		Binaries: []string{agent, harness,
			filepath.Join(dirs["ibverbs-utils"], "usr/bin/ibv_devinfo"),
			filepath.Join(dirs["iproute2"], "usr/bin/rdma"),
			filepath.Join(dirs["perftest"], "usr/bin/ib_write_bw"),
			filepath.Join(dirs["perftest"], "usr/bin/ib_send_lat"),
		},
		// The probe rows compare timings with perftest's.
		Exclusive: true,
		Timeout:   8 * time.Minute,
		Files:     files,
		Script:    script,
	})
	if err != nil {
		t.Fatalf("VM: %v\n%s", err, res.Console)
	}
	out := res.Output
	if os.Getenv("GPUNODE_VM_OUTPUT") != "" {
		t.Log(out)
	}
	section := func(name string) string {
		_, rest, ok := strings.Cut(out, "== "+name+"\n")
		if !ok {
			t.Fatalf("no %s section in:\n%s", name, out)
		}
		body, _, _ := strings.Cut(rest, "== ")
		return body
	}
	if !strings.Contains(section("hwcheck"), "PASS:") || !strings.Contains(out, "== rc 0") {
		t.Errorf("harness on soft-RoCE did not pass:\n%s", section("hwcheck"))
	}
	var rep hwcheck.Report
	if err := json.Unmarshal([]byte(section("report")), &rep); err != nil {
		t.Fatalf("report: %v\n%s", err, section("report"))
	}
	// ibv_devinfo -v and rdma link ran against rxe0 and agreed with the
	// agent fact by fact.
	agreed := map[string]bool{}
	for _, r := range rep.Rows {
		if r.Section == "rdma" && r.Verdict == hwcheck.Agree {
			agreed[r.Fact] = true
		}
	}
	for _, f := range []string{"devices (ibv_devinfo)", "firmware version", "node GUID", "system image GUID", "state", "link layer",
		"physical state", "active MTU", "rate (Gb/s)", "GIDs", "GID[0]", "GID[1]", "ports (rdma link)", "state (rdma link)", "physical state (rdma link)", "netdev (rdma link)"} {
		if !agreed[f] {
			t.Errorf("rdma %s did not agree; ibv_devinfo -v:\n%s\nreport rows: %+v", f, section("ibv"), rep.Rows)
		}
	}
	// The agent's loopback probe beside perftest's ib_write_bw and
	// ib_send_lat on rxe0, same parameters, ratios within the window.
	for _, f := range []string{"probe write_bw vs ib_write_bw", "probe send_lat vs ib_send_lat"} {
		var row *hwcheck.Row
		for i, r := range rep.Rows {
			if r.Section == "rdma-probe" && r.Device == "rxe0/1" && r.Fact == f {
				row = &rep.Rows[i]
			}
		}
		if row == nil || row.Verdict != hwcheck.Agree {
			t.Errorf("%s: %+v\nprobe:\n%s\nib_write_bw:\n%s\nib_send_lat:\n%s", f, row, section("raw probe-loopback-1.json"),
				section("raw ib_write_bw-rxe0-1-1.txt"), section("raw ib_send_lat-rxe0-1-1.txt"))
			continue
		}
		t.Logf("%s: gpunode %s, perftest %s (%s)", f, row.Agent, row.Vendor, row.Note)
	}
}
