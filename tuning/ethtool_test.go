package tuning

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeNICs stands in for the kernel's ethtool interface in plan and gate
// tests; the real interface is tested on virtio-net in the tuning VM
// (test/tuning TestNICRingsOnRealKernel).
type fakeNICs struct {
	vals     map[string]string // "<netdev>/<attr>" -> value
	max      map[string]string
	writes   []string
	adaptive bool // whether the driver supports adaptive coalescing
}

func newFakeNICs(netdevs ...string) *fakeNICs {
	f := &fakeNICs{vals: map[string]string{}, max: map[string]string{}, adaptive: true}
	for _, n := range netdevs {
		f.vals[n+"/rx-ring"], f.vals[n+"/tx-ring"] = "1024", "1024"
		f.max[n+"/rx-ring"], f.max[n+"/tx-ring"] = "8192", "8192"
		f.vals[n+"/adaptive-rx"], f.vals[n+"/adaptive-tx"] = "off", "off"
	}
	return f
}

func (f *fakeNICs) dial() (NICIO, error) { return f, nil }
func (f *fakeNICs) Close()               {}

func (f *fakeNICs) Get(netdev, attr string) (string, string, error) {
	v, ok := f.vals[netdev+"/"+attr]
	switch {
	case !ok:
		return "", "", unix.ENODEV
	case strings.HasPrefix(attr, "adaptive") && !f.adaptive:
		return "", "", unix.EOPNOTSUPP
	}
	return v, f.max[netdev+"/"+attr], nil
}

func (f *fakeNICs) Set(netdev, attr, v string) error {
	k := netdev + "/" + attr
	if m := f.max[k]; m != "" {
		if n, _ := strconv.Atoi(v); n > atoiOr(m) {
			return unix.EINVAL
		}
	}
	f.writes = append(f.writes, k+"="+v)
	f.vals[k] = v
	return nil
}

const nicProfile = "name: n\nnic:\n  rxRing: 8192\n  txRing: 4096\n  adaptiveRx: true\n"

// Ring resizes are disruptive: planned and marked, never made without
// allowDisruptive (apply, and so the daemon, leaves them); with it they
// are made, verified, repaired on drift and reverted. The default
// selection is the RDMA devices' netdevs.
func TestNICDisruptiveGate(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "h100-roce")
	roce := nicNetdevs(f.fs, NICSettings{}) // from /sys/class/infiniband/*/ports/*/gid_attrs/ndevs/0
	if len(roce) < 2 {
		t.Fatalf("RoCE netdevs %v", roce)
	}
	nics := newFakeNICs(roce...)
	f.tuner.NIC = nics.dial
	first := roce[0]
	n := len(roce)

	p := mustProfile(t, nicProfile)
	pl, _, err := f.tuner.Plan(ctx, p, f.m)
	if err != nil {
		t.Fatal(err)
	}
	var gated, set int
	for _, s := range pl.Steps {
		switch {
		case s.Action == ActionSkip && s.Disruptive && strings.Contains(s.Note, "allowDisruptive"):
			gated++
		case s.Action == ActionSet && !s.Disruptive && strings.HasSuffix(s.Key, "/adaptive-rx"):
			set++
		default:
			t.Errorf("step %+v", s)
		}
	}
	if gated != 2*n || set != n {
		t.Fatalf("%d gated ring steps, %d adaptive steps; want %d and %d (%d RoCE netdevs)", gated, set, 2*n, n, n)
	}
	if res, err := f.tuner.Apply(ctx, p, f.m); err != nil || !res.OK() || len(res.Changes) != n {
		t.Fatalf("apply: %v %+v", err, res.Changes)
	}
	for _, w := range nics.writes {
		if strings.Contains(w, "ring") {
			t.Errorf("a ring was resized without allowDisruptive: %s", w)
		}
	}

	allow := mustProfile(t, nicProfile+"  allowDisruptive: true\n")
	res, err := f.tuner.Apply(ctx, allow, f.m)
	if err != nil || !res.OK() || len(res.Changes) != 2*n {
		t.Fatalf("apply allowing disruption: %v %+v", err, res.Changes)
	}
	if !res.Changes[0].Disruptive {
		t.Errorf("change not marked disruptive: %+v", res.Changes[0])
	}
	if pl, _, _ := f.tuner.Plan(ctx, allow, f.m); !pl.Compliant() {
		t.Fatalf("not compliant: %s", pl.Summary())
	}
	nics.vals[first+"/rx-ring"] = "1024" // someone resized it back
	pl, _, _ = f.tuner.Plan(ctx, allow, f.m)
	if d := pl.Drifted(); len(d) != 1 || d[0].Key != first+"/rx-ring" || !d[0].Disruptive {
		t.Fatalf("drift %+v", d)
	}
	// Without allowDisruptive the drift is reported, not repaired.
	if pl, _, _ := f.tuner.Plan(ctx, p, f.m); pl.Compliant() == false {
		for _, s := range pl.Steps {
			if s.Key == first+"/rx-ring" && s.Action != ActionSkip {
				t.Errorf("drifted ring without allowDisruptive: %+v", s)
			}
		}
	}
	if res, err := f.tuner.Apply(ctx, allow, f.m); err != nil || len(res.Changes) != 1 {
		t.Fatalf("repair: %v %+v", err, res.Changes)
	}

	rev, err := f.tuner.Revert(ctx)
	if err != nil || !rev.OK() || len(rev.Changes) != 3*n {
		t.Fatalf("revert: %v %d changes %+v", err, len(rev.Changes), rev.Failed())
	}
	for k, v := range nics.vals {
		want := map[bool]string{true: "1024", false: "off"}[strings.Contains(k, "ring")]
		if v != want {
			t.Errorf("after revert %s = %s, want %s", k, v, want)
		}
	}
}

// A size above the driver's maximum, a driver without adaptive
// coalescing, a netdev that does not exist are unsupported; outside the
// host's network namespace netdev settings are refused.
func TestNICUnsupportedAndRefused(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "cpu-only")
	nics := newFakeNICs("eth0")
	nics.adaptive = false
	f.tuner.NIC = nics.dial
	p := mustProfile(t, "name: n\nnic:\n  netdevs: [eth0, gone0]\n  rxRing: 16384\n  adaptiveTx: false\n  allowDisruptive: true\n")
	pl, _, err := f.tuner.Plan(ctx, p, f.m)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range pl.Steps {
		got = append(got, s.Key+"="+string(s.Action))
	}
	want := []string{"eth0/adaptive-tx=unsupported", "eth0/rx-ring=unsupported", "gone0/adaptive-tx=unsupported", "gone0/rx-ring=unsupported"}
	if !slices.Equal(got, want) {
		t.Errorf("%v, want %v", got, want)
	}
	f.tuner.NetNS = func() NetNS { return NetNS{State: NetNSOther, Detail: "pod network"} }
	pl, _, _ = f.tuner.Plan(ctx, mustProfile(t, "name: n\nnic:\n  netdevs: [eth0]\n  rxRing: 2048\n"), f.m)
	if len(pl.Steps) != 1 || pl.Steps[0].Action != ActionRefused {
		t.Errorf("outside the host's network namespace: %+v", pl.Steps)
	}
}

func TestNICProfileRejects(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"name: x\nnic:\n  netdevs: [eth0]\n", "no ring size or coalescing"},
		{"name: x\nnic:\n  allowDisruptive: true\n", "no ring size or coalescing"},
		{"name: x\nnic:\n  rxRing: -1\n", "nic.rxRing: -1"},
		{"name: x\nnic:\n  txRing: 2000000\n", "nic.txRing"},
		{"name: x\nnic:\n  netdevs: [\"a/b\"]\n  rxRing: 1\n", "not a netdev name"},
		{"name: x\nnic:\n  netdevs: [averyveryverylongname]\n  rxRing: 1\n", "not a netdev name"},
		{"name: x\nnic:\n  adaptiveRx: yes please\n", "into bool"},
		{"name: x\nnic:\n  ringRx: 1\n", "unknown key \"ringRx\" in nic"},
	} {
		_, err := ParseProfile([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseProfile(%q): %v, want an error containing %q", tc.yaml, err, tc.want)
		}
	}
	for _, key := range []string{"eth0", "eth0/rx", "/rx-ring", "a b/rx-ring", "eth0/rx-ring/x"} {
		if err := (ID{KindNIC, key}).check(); err == nil {
			t.Errorf("journal key %q accepted", key)
		}
	}
}
