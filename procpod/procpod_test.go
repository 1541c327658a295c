package procpod_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpunode/gpunode/internal/hostfs"
	"github.com/gpunode/gpunode/procpod"
)

// The cgroup paths below are real ones posted in public issue threads
// (facts, quoted as data): containerd with the systemd driver on cgroup
// v2 from netdata/netdata#4868; CRI-O with the systemd driver on cgroup v1
// from opencontainers/runc#4620; kind's nested kubelet.slice from
// containerd/nri#227; Docker with the systemd driver from
// kontena/pharos-cluster#440. The cgroupfs-driver shapes follow the
// kubelet's naming (kubepods/<qos>/pod<uid>/<id>).
const (
	ctrA = "09d185410c4e25236cc24717f881589bb0978b24eafd101624e627a4dd8d3439"
	ctrB = "5eed917563583925ffdbd40a64efb2aaffe58638e57add8becaf460fe74f5b1c"
	ctrC = "a09bc17f5aa29b0dbdec9ede5f46cf1396d2405917ab02e6f1eb1019f388396e"
	ctrD = "abddff03dfd7710c79a750ce3e730365cbb2c8247a974170c1062683bc3e9152"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		want procpod.Container
		ok   bool
	}{
		{"v2 systemd containerd",
			"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod03f3f104_3215_44f2_9686_d4dd1f05a7ed.slice/cri-containerd-" + ctrA + ".scope\n",
			procpod.Container{PodUID: "03f3f104-3215-44f2-9686-d4dd1f05a7ed", ContainerID: ctrA}, true},
		{"v2 systemd static pod (config hash uid)",
			"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod187bff14cccb94f179e943eacce55bb3.slice/cri-containerd-" + ctrA + ".scope\n",
			procpod.Container{PodUID: "187bff14cccb94f179e943eacce55bb3", ContainerID: ctrA}, true},
		{"v1 systemd CRI-O",
			"13:freezer:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poda5c1f8d5_1919_434d_add7_4afaafdaef89.slice/crio-" + ctrB + ".scope\n" +
				"12:cpuset:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poda5c1f8d5_1919_434d_add7_4afaafdaef89.slice/crio-" + ctrB + ".scope\n" +
				"11:files:/\n",
			procpod.Container{PodUID: "a5c1f8d5-1919-434d-add7-4afaafdaef89", ContainerID: ctrB}, true},
		{"v2 kind nested kubelet.slice besteffort",
			"0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod1e597579_417e_482f_bf65_5fe170c3aebd.slice/cri-containerd-" + ctrC + ".scope\n",
			procpod.Container{PodUID: "1e597579-417e-482f-bf65-5fe170c3aebd", ContainerID: ctrC}, true},
		{"v1 systemd docker",
			"1:name=systemd:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod9692aa0e_748e_11e8_8dfa_76d458035df6.slice/docker-" + ctrD + ".scope\n",
			procpod.Container{PodUID: "9692aa0e-748e-11e8-8dfa-76d458035df6", ContainerID: ctrD}, true},
		{"v2 systemd guaranteed (no qos slice)",
			"0::/kubepods.slice/kubepods-pod03f3f104_3215_44f2_9686_d4dd1f05a7ed.slice/cri-containerd-" + ctrA + ".scope\n",
			procpod.Container{PodUID: "03f3f104-3215-44f2-9686-d4dd1f05a7ed", ContainerID: ctrA}, true},
		{"v1 cgroupfs containerd",
			"12:memory:/kubepods/burstable/pod03f3f104-3215-44f2-9686-d4dd1f05a7ed/" + ctrA + "\n11:cpu,cpuacct:/kubepods/burstable/pod03f3f104-3215-44f2-9686-d4dd1f05a7ed/" + ctrA + "\n",
			procpod.Container{PodUID: "03f3f104-3215-44f2-9686-d4dd1f05a7ed", ContainerID: ctrA}, true},
		{"v2 cgroupfs CRI-O",
			"0::/kubepods/besteffort/pod03f3f104-3215-44f2-9686-d4dd1f05a7ed/crio-" + ctrB + "\n",
			procpod.Container{PodUID: "03f3f104-3215-44f2-9686-d4dd1f05a7ed", ContainerID: ctrB}, true},
		{"hybrid v1+v2 prefers the unified line",
			"1:name=systemd:/kubepods.slice/kubepods-pod9692aa0e_748e_11e8_8dfa_76d458035df6.slice/docker-" + ctrD + ".scope\n" +
				"0::/kubepods.slice/kubepods-pod03f3f104_3215_44f2_9686_d4dd1f05a7ed.slice/cri-containerd-" + ctrA + ".scope\n",
			procpod.Container{PodUID: "03f3f104-3215-44f2-9686-d4dd1f05a7ed", ContainerID: ctrA}, true},
		{"CRI-O conmon is in the pod, in no container",
			"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poda5c1f8d5_1919_434d_add7_4afaafdaef89.slice/crio-conmon-" + ctrB + ".scope\n",
			procpod.Container{PodUID: "a5c1f8d5-1919-434d-add7-4afaafdaef89", ContainerID: ctrB}, true},
		{"pod cgroup itself", "0::/kubepods/burstable/pod03f3f104-3215-44f2-9686-d4dd1f05a7ed\n",
			procpod.Container{PodUID: "03f3f104-3215-44f2-9686-d4dd1f05a7ed"}, true},
		{"host daemon v1", "11:cpuacct,cpu:/system.slice\n1:name=systemd:/system.slice/kubelet.service\n", procpod.Container{}, false},
		{"host v2 user session", "0::/user.slice/user-1000.slice/session-3.scope\n", procpod.Container{}, false},
		{"cgroup namespace root", "0::/\n", procpod.Container{}, false},
		{"empty", "", procpod.Container{}, false},
		{"garbage", "not a cgroup file\n\x00\xff::::\n", procpod.Container{}, false},
		{"pod-like but short uid", "0::/kubepods/burstable/pod1234/" + ctrA + "\n", procpod.Container{}, false},
		{"slice without kubepods", "0::/machine.slice/machine-pod03f3f104_3215_44f2_9686_d4dd1f05a7ed.slice\n", procpod.Container{}, false},
		{"container id too short", "0::/kubepods/pod03f3f104-3215-44f2-9686-d4dd1f05a7ed/abc\n",
			procpod.Container{PodUID: "03f3f104-3215-44f2-9686-d4dd1f05a7ed"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := procpod.Parse([]byte(tc.file))
			if got != tc.want || ok != tc.ok {
				t.Errorf("Parse = %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod03f3f104_3215_44f2_9686_d4dd1f05a7ed.slice/cri-containerd-" + ctrA + ".scope\n")
	f.Add("12:memory:/kubepods/burstable/pod03f3f104-3215-44f2-9686-d4dd1f05a7ed/" + ctrA + "\n")
	f.Add("0::/\n")
	f.Fuzz(func(t *testing.T, s string) {
		c, ok := procpod.Parse([]byte(s))
		if !ok {
			if c != (procpod.Container{}) {
				t.Fatalf("not ok but %+v", c)
			}
			return
		}
		if len(c.PodUID) != 36 && len(c.PodUID) != 32 || strings.ToLower(c.PodUID) != c.PodUID {
			t.Fatalf("pod uid %q", c.PodUID)
		}
		if c.ContainerID != "" && len(c.ContainerID) != 64 {
			t.Fatalf("container id %q", c.ContainerID)
		}
		if !strings.Contains(strings.ReplaceAll(strings.ToLower(s), "_", "-"), c.PodUID) {
			t.Fatalf("pod uid %q not in the input", c.PodUID)
		}
	})
}

func TestReaderThroughHostRoot(t *testing.T) {
	root := t.TempDir()
	write := func(pid, body string) {
		dir := filepath.Join(root, "proc", pid)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("4242", "0::/kubepods/burstable/pod03f3f104-3215-44f2-9686-d4dd1f05a7ed/"+ctrA+"\n")
	write("1", "0::/init.scope\n")
	fsys, err := hostfs.New(root)
	if err != nil {
		t.Fatal(err)
	}
	r := procpod.NewReader(fsys)
	c, ok, err := r.Of(4242)
	if err != nil || !ok || c.ContainerID != ctrA {
		t.Errorf("Of(4242) = %+v, %v, %v", c, ok, err)
	}
	if _, ok, err := r.Of(1); err != nil || ok {
		t.Errorf("Of(1) = %v, %v; want a host process", ok, err)
	}
	if _, _, err := r.Of(7); !errors.Is(err, procpod.ErrNoProcess) {
		t.Errorf("Of(7) error = %v; want ErrNoProcess", err)
	}
}
