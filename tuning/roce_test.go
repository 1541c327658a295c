package tuning

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/rdma/dcb"
	"github.com/gpunode/gpunode/sim"
)

// fileDCB is a whole fake of DCB netlink that keeps each netdev's PFC
// mask in a file under the fixture root (dcb/<netdev>), so a helper
// process killed between writes leaves its state behind as the kernel
// would. A netdev without a file has no DCB.
type fileDCB struct{ dir string }

func (d fileDCB) PFCEnabled(_ context.Context, ifname string) (uint8, error) {
	b, err := os.ReadFile(filepath.Join(d.dir, ifname))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("%s: %w", ifname, rdma.ErrNoDCB)
	}
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(string(b), 10, 8)
	return uint8(n), err
}

func (d fileDCB) SetPFC(ctx context.Context, ifname string, mask uint8) error {
	if _, err := d.PFCEnabled(ctx, ifname); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(d.dir, ifname), []byte(strconv.Itoa(int(mask))), 0o644)
}

// DSCPMap and SetDSCPMap keep the DSCP map as trustText spells it in
// dcb/<netdev>.dscp; none is an empty map.
func (d fileDCB) DSCPMap(ctx context.Context, ifname string) (map[uint8]uint8, error) {
	if _, err := d.PFCEnabled(ctx, ifname); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(d.dir, ifname+".dscp"))
	if errors.Is(err, fs.ErrNotExist) {
		return map[uint8]uint8{}, nil
	}
	if err != nil {
		return nil, err
	}
	return parseTrustText(string(b))
}

func (d fileDCB) SetDSCPMap(ctx context.Context, ifname string, m map[uint8]uint8) error {
	if _, err := d.PFCEnabled(ctx, ifname); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(d.dir, ifname+".dscp"), []byte(trustText(m)), 0o644)
}

// The host's DCB source sets both PFC and the trust mode.
var (
	_ DCB       = (*dcb.Reader)(nil)
	_ DSCPTrust = (*dcb.Reader)(nil)
)

// The rdma_cm configfs of the fixtures: mkdir of a device directory makes
// ports/1/default_roce_mode with the kernel's default (RoCE v2 where the
// port has it, cma_add_one), as make_cma_dev does; rmdir takes the
// default groups with it.
const configfsDefault = rdma.RoCEv2

// roceFixture is h100-roce-lossy (eight GPU-side RoCE ports without PFC
// and ECN, two frontend ports with ECN) with rdma_cm's configfs mounted:
// mlx5_1 has a directory someone else created, holding RoCE v1; no
// other device has one.
func roceFixture(t testing.TB) *fixture {
	t.Helper()
	root := tmpfsDir(t)
	n, err := sim.Build("h100-roce-lossy", root)
	if err != nil {
		t.Fatal(err)
	}
	f := fixtureAt(t, root)
	dcbDir := filepath.Join(root, "dcb")
	if err := os.Mkdir(dcbDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for ifname, mask := range n.PFC {
		if err := os.WriteFile(filepath.Join(dcbDir, ifname), []byte(strconv.Itoa(int(mask))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(f.fs.Path(rdmaCMDir+"/mlx5_1/ports/1"), 0o755); err != nil {
		t.Fatal(err)
	}
	f.write(t, rdmaCMDir+"/mlx5_1/ports/1/default_roce_mode", rdma.RoCEv1)
	roceHooks(f)
	return f
}

func roceHooks(f *fixture) {
	f.tuner.DCB = fileDCB{filepath.Join(f.root, "dcb")}
	f.tuner.afterMkdir = func(dir string) {
		p := f.fs.Path(dir + "/ports/1")
		os.MkdirAll(p, 0o755)
		os.WriteFile(p+"/default_roce_mode", []byte(configfsDefault+"\n"), 0o644)
	}
	f.tuner.removeDir = os.RemoveAll
}

// state is every file of the tree (DCB masks included) and every
// directory under rdma_cm's configfs.
func (f *fixture) roceState(t testing.TB) map[string]string {
	t.Helper()
	out := f.files(t)
	filepath.WalkDir(f.fs.Path(rdmaCMDir), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			rel, _ := filepath.Rel(f.root, p)
			out["/"+rel+"/"] = "dir"
		}
		return nil
	})
	return out
}

func diffState(before, after map[string]string) []string {
	var diffs []string
	for _, p := range slices.Sorted(maps.Keys(before)) {
		if NormalizeValue(after[p]) != NormalizeValue(before[p]) {
			diffs = append(diffs, fmt.Sprintf("%s: %q -> %q", p, before[p], after[p]))
		}
	}
	for _, p := range slices.Sorted(maps.Keys(after)) {
		if _, ok := before[p]; !ok {
			diffs = append(diffs, p+" created")
		}
	}
	return diffs
}

func countKinds(pl Plan, a Action) map[string]int {
	c := map[string]int{}
	for _, s := range pl.Steps {
		if s.Action == a {
			c[s.Kind]++
		}
	}
	return c
}

// roce-lossless on h100-roce-lossy: every setting planned, applied,
// verified; drift repaired; revert brings back exactly the lossy node,
// removing the configfs directories tuning created and leaving the one
// it did not.
func TestRoCEApplyVerifyDriftRevert(t *testing.T) {
	ctx := context.Background()
	f := roceFixture(t)
	p := builtin(t, "roce-lossless")
	before := f.roceState(t)

	pl, _, err := f.tuner.Plan(ctx, p, f.m)
	if err != nil {
		t.Fatal(err)
	}
	// 10 RoCE ports: 10 RoCE modes (9 without a directory, mlx5_1 at
	// v1), 8 PFC masks to set (the frontend ports too: none -> 3), ECN
	// np and rp on priority 3 of the 8 lossy ports (the frontends have it).
	if got, want := countKinds(pl, ActionSet), map[string]int{KindRoCEMode: 10, KindPFC: 10, KindECN: 16}; !maps.Equal(got, want) {
		t.Fatalf("set steps %v, want %v\n%+v", got, want, pl.Steps)
	}
	if got := countKinds(pl, ActionOK); got[KindECN] != 4 || len(got) != 1 {
		t.Errorf("ok steps %v", got)
	}
	for _, s := range pl.Steps {
		if s.Kind == KindRoCEMode && s.Action == ActionOK {
			t.Errorf("%s ok before its directory exists: %+v", s.ID, s)
		}
	}

	res, err := f.tuner.Apply(ctx, p, f.m)
	if err != nil || !res.OK() {
		t.Fatalf("apply: %v %+v", err, res.Failed())
	}
	if pl, _, _ := f.tuner.Plan(ctx, p, f.m); !pl.Compliant() {
		t.Fatalf("not compliant after apply: %s", pl.Summary())
	}
	applied := f.roceState(t)
	if got := f.read(t, rdmaCMDir+"/mlx5_0/ports/1/default_roce_mode"); got != rdma.RoCEv2 {
		t.Errorf("mlx5_0 mode %q", got)
	}
	if got := f.read(t, "/dcb/enp24s0np0"); got != "8" {
		t.Errorf("PFC of enp24s0np0 %s, want 8 (priority 3)", got)
	}
	if got := f.read(t, "/sys/class/net/enp24s0np0/ecn/roce_rp/enable/3"); got != "1" {
		t.Errorf("ECN rp 3 of enp24s0np0 %s", got)
	}
	if got := f.read(t, "/sys/class/net/enp24s0np0/ecn/roce_rp/enable/4"); got != "0" {
		t.Errorf("ECN rp 4 of enp24s0np0 changed to %s: the profile names only 3", got)
	}

	// Someone puts three settings back: drift, repaired by the next apply.
	f.write(t, rdmaCMDir+"/mlx5_1/ports/1/default_roce_mode", rdma.RoCEv1)
	f.write(t, "/dcb/enp24s0np0", "0")
	f.write(t, "/sys/class/net/enp58s0np0/ecn/roce_np/enable/3", "0")
	pl, _, err = f.tuner.Plan(ctx, p, f.m)
	if err != nil {
		t.Fatal(err)
	}
	var drifted []string
	for _, s := range pl.Drifted() {
		drifted = append(drifted, s.ID.String())
	}
	if want := []string{"roce-mode mlx5_1/1", "pfc enp24s0np0", "ecn enp58s0np0/roce_np/3"}; !slices.Equal(drifted, want) {
		t.Errorf("drifted %v, want %v", drifted, want)
	}
	if res, err := f.tuner.Apply(ctx, p, f.m); err != nil || !res.OK() || len(res.Changes) != 3 {
		t.Fatalf("repair: %v, %d changes", err, len(res.Changes))
	}
	if d := diffState(applied, f.roceState(t)); len(d) > 0 {
		t.Errorf("after the repair: %v", d)
	}

	if res, err := f.tuner.Revert(ctx); err != nil || !res.OK() {
		t.Fatalf("revert: %v %+v", err, res.Failed())
	}
	if d := diffState(before, f.roceState(t)); len(d) > 0 {
		t.Errorf("revert is not exact:\n%s", strings.Join(d, "\n"))
	}
	if got := f.read(t, rdmaCMDir+"/mlx5_1/ports/1/default_roce_mode"); got != rdma.RoCEv1 {
		t.Errorf("mlx5_1 (a directory tuning did not create) holds %q after revert", got)
	}
}

// The golden plan of roce-lossless on h100-roce-lossy, as `tune plan`
// prints it: every change is shown before it happens.
func TestGoldenRoCEPlan(t *testing.T) {
	f := roceFixture(t)
	pl, _, err := f.tuner.Plan(context.Background(), builtin(t, "roce-lossless"), f.m)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := WritePlan(&b, pl); err != nil {
		t.Fatal(err)
	}
	golden(t, "plans/h100-roce-lossy.roce-lossless.configfs.txt", b.Bytes())
}

// roceCrashEnv names the stage, count and root at which the RoCE helper
// process dies.
const roceCrashEnv = "GPUNODE_TUNING_ROCE_CRASH"

// TestRoCECrashHelper applies roce-lossless to a roceFixture tree and
// dies at a crash point; it does nothing in a normal run.
func TestRoCECrashHelper(t *testing.T) {
	spec := os.Getenv(roceCrashEnv)
	if spec == "" {
		return
	}
	stage, rest, _ := strings.Cut(spec, ":")
	n, root, _ := strings.Cut(rest, ":")
	after, _ := strconv.Atoi(n)
	f := fixtureAt(t, root)
	roceHooks(f)
	seen := 0
	f.tuner.crashPoint = func(s string) {
		if s == stage {
			if seen++; seen == after {
				os.Exit(42) // no deferred cleanup, as after kill -9
			}
		}
	}
	f.tuner.Apply(context.Background(), builtin(t, "roce-lossless"), f.m)
	t.Fatal("did not crash")
}

// A process killed between any two steps of applying roce-lossless
// (after the journal, after the rdma_cm directories and their originals,
// between writes) loses nothing: revert, or apply then revert, restores
// the lossy node exactly, configfs directories included.
func TestRoCECrashLosesNothing(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		stage string
		n     int
		next  string
	}{
		{"journal", 1, "revert"},
		{"journal", 1, "apply"},
		{"write", 1, "revert"}, // directories made, originals journaled, nothing written
		{"write", 2, "revert"},
		{"write", 12, "apply"},
		{"write", 15, "revert"},
		{"write", 36, "revert"},
	} {
		t.Run(fmt.Sprintf("%s-%d-then-%s", tc.stage, tc.n, tc.next), func(t *testing.T) {
			f := roceFixture(t)
			before := f.roceState(t)
			cmd := exec.Command(os.Args[0], "-test.run=^TestRoCECrashHelper$")
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s:%d:%s", roceCrashEnv, tc.stage, tc.n, f.root))
			out, err := cmd.CombinedOutput()
			if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.ExitCode() != 42 {
				t.Fatalf("helper did not crash: %v\n%s", err, out)
			}
			if tc.next == "apply" {
				res, err := f.tuner.Apply(ctx, builtin(t, "roce-lossless"), f.m)
				if err != nil || !res.OK() {
					t.Fatalf("apply after the crash: %v %+v", err, res.Failed())
				}
				if pl, _, _ := f.tuner.Plan(ctx, builtin(t, "roce-lossless"), f.m); !pl.Compliant() {
					t.Errorf("not compliant after apply: %s", pl.Summary())
				}
			}
			if res, err := f.tuner.Revert(ctx); err != nil || !res.OK() {
				t.Fatalf("revert: %v %+v", err, res.Failed())
			}
			if d := diffState(before, f.roceState(t)); len(d) > 0 {
				t.Errorf("not the state before:\n%s", strings.Join(d, "\n"))
			}
			if j, _, _ := f.tuner.Store.Load(f.root, readBootID(f.fs)); len(j.Entries) != 0 {
				t.Errorf("journal keeps %d entries", len(j.Entries))
			}
		})
	}
}

// Netdev settings (PFC, ECN) are refused outside the host's network
// namespace, like net.* sysctls; rdma_cm's RoCE mode (configfs, global)
// is not. Without configfs, DCB or the ECN files each is unsupported,
// saying why, and the plan is still compliant.
func TestRoCERefusedAndUnsupported(t *testing.T) {
	ctx := context.Background()
	f := roceFixture(t)
	p := builtin(t, "roce-lossless")
	f.tuner.NetNS = func() NetNS { return NetNS{State: NetNSOther, Detail: "pod network"} }
	pl, _, err := f.tuner.Plan(ctx, p, f.m)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := countKinds(pl, ActionRefused), map[string]int{KindPFC: 10, KindECN: 20}; !maps.Equal(got, want) {
		t.Errorf("refused %v, want %v", got, want)
	}
	if got := countKinds(pl, ActionSet); got[KindRoCEMode] != 10 {
		t.Errorf("RoCE modes set: %v", got)
	}
	for _, s := range pl.Steps {
		if s.Action == ActionRefused && !strings.Contains(s.Note, "a netdev's DCB and ECN settings are reached only from the namespace it is in; run the agent with hostNetwork: true") {
			t.Errorf("%s refused with note %q", s.ID, s.Note)
		}
	}

	f.tuner.NetNS = func() NetNS { return NetNS{State: NetNSHost} }
	f.tuner.DCB = nil
	if err := os.RemoveAll(f.fs.Path("/sys/kernel/config")); err != nil {
		t.Fatal(err)
	}
	for _, ifname := range []string{"enp24s0np0", "enp43s0np0"} {
		if err := os.RemoveAll(f.fs.Path("/sys/class/net/" + ifname + "/ecn")); err != nil {
			t.Fatal(err)
		}
	}
	pl, _, err = f.tuner.Plan(ctx, p, f.m)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := countKinds(pl, ActionUnsupported), map[string]int{KindRoCEMode: 10, KindPFC: 10, KindECN: 4}; !maps.Equal(got, want) {
		t.Errorf("unsupported %v, want %v", got, want)
	}
	for _, s := range pl.Steps {
		if s.Action != ActionUnsupported {
			continue
		}
		want := map[string]string{KindRoCEMode: "CONFIG_INFINIBAND_ADDR_TRANS_CONFIGFS", KindPFC: "no DCB access", KindECN: "ECN switches are mlx5's"}[s.Kind]
		if !strings.Contains(s.Note, want) {
			t.Errorf("%s: note %q, want one saying %q", s.ID, s.Note, want)
		}
	}
	res, err := f.tuner.Apply(ctx, p, f.m)
	if err != nil || !res.OK() {
		t.Fatalf("apply: %v", err)
	}
	if pl, _, _ := f.tuner.Plan(ctx, p, f.m); !pl.Compliant() {
		t.Errorf("unsupported settings count against the plan: %s", pl.Summary())
	}
}

func TestRoCEProfileValidation(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"name: x\nroce:\n  defaultMode: v2\n", `roce.defaultMode: "v2": want "RoCE v2" or "IB/RoCE v1"`},
		{"name: x\nroce:\n  pfc: [8]\n", "roce.pfc: priority 8: want 0 to 7"},
		{"name: x\nroce:\n  ecn: [3, 3]\n", "roce.ecn: priority 3 given twice"},
		{"name: x\nroce:\n  devices: [mlx5_0]\n", "roce.devices: set, but no RoCE setting"},
		{"name: x\nroce:\n  devices: [a/b]\n  pfc: [3]\n", `roce.devices: "a/b" is not a device name`},
		{"name: x\nroce:\n  trsut: dscp\n", `unknown key "trsut" in roce`},
		{"name: x\nroce:\n  trust: DSCP\n", `roce.trust: "DSCP": want pcp or dscp`},
	} {
		_, err := ParseProfile([]byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: err = %v, want %q", c.yaml, err, c.want)
		}
	}
}

// A profile's roce.devices selects ports by RDMA device or netdev name.
func TestRoCEDevices(t *testing.T) {
	f := roceFixture(t)
	p := mustProfile(t, "name: x\nroce:\n  devices: [mlx5_0, enp43s0np0]\n  pfc: [3]\n")
	pl, _, err := f.tuner.Plan(context.Background(), p, f.m)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, s := range pl.Steps {
		keys = append(keys, s.ID.String())
	}
	if want := []string{"pfc enp24s0np0", "pfc enp43s0np0"}; !slices.Equal(keys, want) {
		t.Errorf("steps %v, want %v", keys, want)
	}
}

// A mode the port has no GID of (soft-RoCE: RoCE v2 only) is
// unsupported, not a write the kernel answers with EINVAL.
func TestRoCEModeNeedsGIDs(t *testing.T) {
	f := roceFixture(t)
	for _, i := range []int{0, 2} { // mlx5_0's IB/RoCE v1 GIDs become RoCE v2 ones
		f.write(t, fmt.Sprintf("/sys/class/infiniband/mlx5_0/ports/1/gid_attrs/types/%d", i), rdma.RoCEv2)
	}
	p := mustProfile(t, "name: v1\nroce:\n  defaultMode: IB/RoCE v1\n")
	pl, _, err := f.tuner.Plan(context.Background(), p, f.m)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range pl.Steps {
		switch {
		case s.Key == "mlx5_0/1" && (s.Action != ActionUnsupported || !strings.Contains(s.Note, "no IB/RoCE v1 GIDs (only RoCE v2)")):
			t.Errorf("mlx5_0 without RoCE v1 GIDs: %+v", s)
		case s.Key == "mlx5_1/1" && s.Action != ActionOK, s.Key != "mlx5_0/1" && s.Key != "mlx5_1/1" && s.Action != ActionSet:
			t.Errorf("%s: %+v", s.Key, s)
		}
	}
}

// Trust mode over the DCB application table: dscp adds the default map
// where a netdev trusts PCP, a map of the host's own is kept, pcp deletes
// it; drift is repaired and revert puts back exactly the map there was,
// custom ones included.
func TestRoCETrust(t *testing.T) {
	ctx := context.Background()
	f := roceFixture(t)
	names, _ := f.fs.Names("/dcb")
	for _, ifname := range names {
		f.write(t, "/dcb/"+ifname+".dscp", "pcp")
	}
	const custom = "dscp 24:3,26:3,46:5"
	f.write(t, "/dcb/enp24s0np0.dscp", custom)
	before := f.roceState(t)

	dscp := mustProfile(t, "name: d\nroce:\n  trust: dscp\n")
	pl, _, err := f.tuner.Plan(ctx, dscp, f.m)
	if err != nil {
		t.Fatal(err)
	}
	if got := countKinds(pl, ActionSet); got[KindTrust] != 9 {
		t.Errorf("trust set on %d netdevs, want 9 (the one with its own map is kept)", got[KindTrust])
	}
	for _, s := range pl.Steps {
		if s.Key == "enp24s0np0" && (s.Action != ActionOK || !strings.Contains(s.Note, "own map")) {
			t.Errorf("custom map: %+v", s)
		}
	}
	if res, err := f.tuner.Apply(ctx, dscp, f.m); err != nil || !res.OK() {
		t.Fatalf("apply: %v %+v", err, res.Failed())
	}
	if got := f.read(t, "/dcb/enp43s0np0.dscp"); got != TrustDSCP {
		t.Errorf("enp43s0np0 after apply: %q", got)
	}
	if got := f.read(t, "/dcb/enp24s0np0.dscp"); got != custom {
		t.Errorf("custom map after apply: %q", got)
	}
	f.write(t, "/dcb/enp43s0np0.dscp", "pcp")
	pl, _, _ = f.tuner.Plan(ctx, dscp, f.m)
	if d := pl.Drifted(); len(d) != 1 || d[0].Key != "enp43s0np0" {
		t.Errorf("drift: %+v", d)
	}
	if res, err := f.tuner.Apply(ctx, dscp, f.m); err != nil || !res.OK() || len(res.Changes) != 1 {
		t.Fatalf("repair: %v", err)
	}
	if res, err := f.tuner.Revert(ctx); err != nil || !res.OK() {
		t.Fatalf("revert: %v", err)
	}
	if d := diffState(before, f.roceState(t)); len(d) > 0 {
		t.Errorf("revert is not exact:\n%s", strings.Join(d, "\n"))
	}

	// pcp deletes the custom map; revert brings it back entry for entry.
	pcp := mustProfile(t, "name: p\nroce:\n  trust: pcp\n  devices: [enp24s0np0]\n")
	if res, err := f.tuner.Apply(ctx, pcp, f.m); err != nil || !res.OK() || len(res.Changes) != 1 {
		t.Fatalf("apply pcp: %v %+v", err, res.Changes)
	}
	if got := f.read(t, "/dcb/enp24s0np0.dscp"); got != TrustPCP {
		t.Errorf("after pcp: %q", got)
	}
	if res, err := f.tuner.Revert(ctx); err != nil || !res.OK() {
		t.Fatalf("revert: %v", err)
	}
	if got := f.read(t, "/dcb/enp24s0np0.dscp"); got != custom {
		t.Errorf("custom map after revert: %q, want %q", got, custom)
	}

	// Without a DCB source that sets the application table: unsupported.
	f.tuner.DCB = pfcOnly{fileDCB{filepath.Join(f.root, "dcb")}}
	pl, _, _ = f.tuner.Plan(ctx, dscp, f.m)
	if got := countKinds(pl, ActionUnsupported); got[KindTrust] != 10 {
		t.Errorf("unsupported %v", got)
	}
}

// pfcOnly is a DCB source that sets PFC but not the application table
// (as a simulated node's table).
type pfcOnly struct{ d fileDCB }

func (p pfcOnly) PFCEnabled(ctx context.Context, ifname string) (uint8, error) {
	return p.d.PFCEnabled(ctx, ifname)
}

func (p pfcOnly) SetPFC(ctx context.Context, ifname string, mask uint8) error {
	return p.d.SetPFC(ctx, ifname, mask)
}

func TestTrustText(t *testing.T) {
	def, _ := parseTrustText(TrustDSCP)
	for _, c := range []struct {
		m    map[uint8]uint8
		want string
	}{{nil, "pcp"}, {def, "dscp"}, {map[uint8]uint8{46: 5, 24: 3}, "dscp 24:3,46:5"}} {
		got := trustText(c.m)
		back, err := parseTrustText(got)
		if got != c.want || err != nil || trustText(back) != got {
			t.Errorf("%v: %q (back %v, %v), want %q", c.m, got, back, err, c.want)
		}
	}
	for _, bad := range []string{"DSCP", "dscp 64:1", "dscp 3:8", "dscp 3", "dscp "} {
		if _, err := parseTrustText(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
