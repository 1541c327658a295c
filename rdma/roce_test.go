package rdma

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

func TestParseRoCEMode(t *testing.T) {
	for in, want := range map[string]string{"RoCE v2": RoCEv2, "IB/RoCE v1": RoCEv1, "": "", "roce v2": "", "RoCE v3": "", "2": "", "RoCE v2 ": ""} {
		got, err := parseRoCEMode(in)
		if got != want || (err == nil) != (want != "") {
			t.Errorf("parseRoCEMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestParseFlag(t *testing.T) {
	for _, c := range []struct {
		in      string
		want    bool
		wantErr bool
	}{{"0", false, false}, {"1", true, false}, {"", false, true}, {"2", false, true}, {"yes", false, true}, {"01", false, true}, {"-1", false, true}} {
		got, err := parseFlag(c.in)
		if got != c.want || (err != nil) != c.wantErr {
			t.Errorf("parseFlag(%q) = %v, %v", c.in, got, err)
		}
	}
}

// Garbage in the ECN and rdma_cm files is reported on the port; the rest
// of the port is still read.
func TestRoCEGarbage(t *testing.T) {
	f := newFixture(t)
	f.roceNIC("mlx5_1", "0000:ca:00.0", "ens1np0", 1)
	f.file("/sys/class/net/ens1np0/ecn/roce_np/enable/3", "maybe\n")
	f.file("/sys/kernel/config/rdma_cm/mlx5_1/ports/1/default_roce_mode", "RoCE v9\n")
	devs, err := Discover(context.Background(), f.fs())
	if err == nil || !strings.Contains(err.Error(), "roce_np/enable/3") || !strings.Contains(err.Error(), "default_roce_mode") {
		t.Fatalf("err = %v", err)
	}
	p := devs[0].Ports[0]
	want := &RoCEConfig{ECN: &ECN{NotificationPoint: []int{}, ReactionPoint: []int{3}}}
	if !reflect.DeepEqual(p.RoCE, want) || len(p.Errors) != 2 || p.ActiveMTU != 4096 {
		t.Errorf("port %+v, RoCE %+v", p, p.RoCE)
	}
}

// pfcTable answers from a map, as a simulated node does.
type pfcTable map[string]any

func (p pfcTable) PFCEnabled(_ context.Context, ifname string) (uint8, error) {
	switch v := p[ifname].(type) {
	case uint8:
		return v, nil
	case error:
		return 0, v
	}
	return 0, fmt.Errorf("%w: unknown interface", ErrNoDCB)
}

func TestAddPFC(t *testing.T) {
	port := func(netdev string) Port { return Port{Number: 1, Transport: RoCE, Netdev: netdev, RoCE: &RoCEConfig{}} }
	devs := []Device{
		{Name: "mlx5_0", Ports: []Port{port("a")}},
		{Name: "mlx5_1", Ports: []Port{port("b")}},
		{Name: "mlx5_2", Ports: []Port{port("c")}},
		{Name: "mlx5_3", Ports: []Port{{Number: 1, Transport: InfiniBand, Netdev: "ib0"}}},
		{Name: "mlx5_4", Ports: []Port{port("d")}},
	}
	err := AddPFC(context.Background(), devs, pfcTable{"a": uint8(0b10001000), "b": errors.New("netlink receive: timeout"), "ib0": uint8(1),
		"d": fmt.Errorf("DCB of d: %w", syscall.ENODEV)})
	if err == nil || !strings.Contains(err.Error(), "mlx5_1 port 1: PFC of b: netlink receive: timeout") {
		t.Fatalf("err = %v", err)
	}
	if got := devs[0].Ports[0].RoCE.PFC; got == nil || !reflect.DeepEqual(got.Enabled, []int{3, 7}) {
		t.Errorf("a: %+v", got)
	}
	if devs[1].Ports[0].RoCE.PFC != nil || len(devs[1].Ports[0].Errors) != 1 {
		t.Errorf("b: %+v", devs[1].Ports[0])
	}
	if devs[2].Ports[0].RoCE.PFC != nil || len(devs[2].Ports[0].Errors) != 0 {
		t.Errorf("c (no DCB): %+v", devs[2].Ports[0])
	}
	if devs[4].Ports[0].RoCE.PFC != nil || len(devs[4].Ports[0].Errors) != 0 {
		t.Errorf("d (another namespace): %+v", devs[4].Ports[0])
	}
	if devs[3].Ports[0].RoCE != nil {
		t.Error("an InfiniBand port got RoCE settings")
	}
	if err := AddPFC(context.Background(), devs, nil); err != nil {
		t.Error(err)
	}
}
