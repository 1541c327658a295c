package probe_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// countersScript runs soft-RoCE on virtio-net eth0 and on veth0, whose
// peer it takes down and up (a flap: veth0's carrier goes off and on, two
// carrier changes; an admin down and up of virtio-net leaves its carrier
// alone), then runs rdma/ethstats' guest test.
const countersScript = `
/usr/bin/ip link add veth0 type veth peer name veth1
/usr/bin/ip addr add 10.0.3.1/24 dev veth0
ip link set veth1 up; ip link set veth0 up; sleep 1
rdma link add rxe0 type rxe netdev eth0
rdma link add rxe1 type rxe netdev veth0
before=$(cat /sys/class/net/veth0/carrier_changes)
ip link set veth1 down; sleep 1; ip link set veth1 up; sleep 1
echo "== counters"
GPUNODE_RDMA_PORTS="rxe0 eth0 $(cat /sys/class/net/eth0/carrier_changes),rxe1 veth0 $((before + 2))" ethstats.test -test.run 'OnGuest' -test.v 2>&1
echo "== rc $?"
`

// The counter reader with the real ethtool ioctls on a real kernel: the
// rxe devices' netdevs, physical state, rate and a link flap's carrier
// changes, and virtio-net's and veth's driver statistics, which have no
// pause frames.
func TestCountersOnSoftRoCE(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "ethstats.test")
	cmd := exec.Command("go", "test", "-c", "-o", bin, "github.com/gpunode/gpunode/rdma/ethstats")
	cmd.Env = append(os.Environ(), "CGO_CFLAGS=-O2 -g -Wno-deprecated-declarations")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the ethstats tests: %v\n%s", err, out)
	}
	cfg := machine(t, countersScript)
	cfg.Binaries = append(cfg.Binaries, bin)
	s := runVM(t, cfg)["counters"]
	if s.rc != 0 || !strings.Contains(s.body, "--- PASS: TestReadCountersOnGuest") {
		t.Errorf("counters on rxe0: exit %d\n%s", s.rc, s.body)
	}
	t.Log(strconv.Quote(s.body))
}
