package topology

import (
	"encoding/json"
	"strings"
	"testing"
)

// The command line forms are those of the kernel's
// Documentation/admin-guide/kernel-parameters.txt (hugepages=,
// hugepagesz=, default_hugepagesz=) and admin-guide/mm/hugetlbpage.rst
// (the node format "hugepages=0:1,1:2").

func requestsJSON(t *testing.T, c hugeCmdline) string {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseHugeCmdline(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want: the requests as JSON
	}{
		{"BOOT_IMAGE=/vmlinuz ro quiet", `{"Requests":null,"DefaultKB":0}`},
		{"hugepages=1024", `{"Requests":[{"SizeKB":0,"Pages":1024,"PerNode":null}],"DefaultKB":0}`},
		{"hugepagesz=1G hugepages=16 hugepagesz=2M hugepages=512",
			`{"Requests":[{"SizeKB":1048576,"Pages":16,"PerNode":null},{"SizeKB":2048,"Pages":512,"PerNode":null}],"DefaultKB":0}`},
		// default_hugepagesz= names the size a following hugepages= counts,
		// and a hugepages= before any size is of the default size.
		{"default_hugepagesz=1G hugepages=8", `{"Requests":[{"SizeKB":0,"Pages":8,"PerNode":null}],"DefaultKB":1048576}`},
		{"hugepages=8 default_hugepagesz=1g", `{"Requests":[{"SizeKB":0,"Pages":8,"PerNode":null}],"DefaultKB":1048576}`},
		{"default_hugepagesz=1G hugepagesz=1G hugepages=4", `{"Requests":[{"SizeKB":0,"Pages":4,"PerNode":null}],"DefaultKB":1048576}`},
		// The node format: counts per node, summed.
		{"hugepagesz=1G hugepages=1:4,0:2", `{"Requests":[{"SizeKB":1048576,"Pages":6,"PerNode":[{"node":0,"pages":2},{"node":1,"pages":4}]}],"DefaultKB":0}`},
		{`hugepagesz="2048K" hugepages="0:0"`, `{"Requests":[{"SizeKB":2048,"Pages":0,"PerNode":[{"node":0,"pages":0}]}],"DefaultKB":0}`},
		{"hugepages-1G hugepages", `{"Requests":null,"DefaultKB":0}`}, // no "=": not these parameters
		{"quiet -- hugepages=4", `{"Requests":null,"DefaultKB":0}`},   // init's part
		{"hugepagesz=2097152 hugepages=3", `{"Requests":[{"SizeKB":2048,"Pages":3,"PerNode":null}],"DefaultKB":0}`},
	} {
		got, err := parseHugeCmdline(tc.in)
		if err != nil {
			t.Errorf("parseHugeCmdline(%q): %v", tc.in, err)
			continue
		}
		if g := requestsJSON(t, got); g != tc.want {
			t.Errorf("parseHugeCmdline(%q) = %s; want %s", tc.in, g, tc.want)
		}
	}
}

// The kernel ignores these with a warning; so do we, with an error, and
// what it still takes is returned.
func TestParseHugeCmdlineGarbage(t *testing.T) {
	for _, tc := range []struct {
		in, err, want string
	}{
		{"hugepages=x", "hugepages=x", `{"Requests":null,"DefaultKB":0}`},
		{"hugepages=-1", "want a page count", `{"Requests":null,"DefaultKB":0}`},
		{"hugepages=99999999999999999999", "out of range", `{"Requests":null,"DefaultKB":0}`},
		{"hugepages=0:1,x:2", "bad node number", `{"Requests":null,"DefaultKB":0}`},
		{"hugepages=0:1,2", "want <node>:<count>", `{"Requests":null,"DefaultKB":0}`},
		{"hugepages=0:1,0:2", "node 0 given twice", `{"Requests":null,"DefaultKB":0}`},
		{"hugepages=4096:1", "bad node number", `{"Requests":null,"DefaultKB":0}`},
		{"hugepages=0:18446744073709551615,1:1", "overflows", `{"Requests":null,"DefaultKB":0}`},
		{"hugepages=0:", "want a page count", `{"Requests":null,"DefaultKB":0}`},
		{"hugepagesz=3M hugepages=4", "not a huge page size", `{"Requests":null,"DefaultKB":0}`},
		{"hugepagesz=4K hugepages=4", "not a huge page size", `{"Requests":null,"DefaultKB":0}`},
		{"hugepagesz=1Q hugepages=4", "want a size", `{"Requests":null,"DefaultKB":0}`},
		{"hugepagesz=99999999999T", "want a size", `{"Requests":null,"DefaultKB":0}`},
		{"hugepagesz=\xff\xfe", "want a size", `{"Requests":null,"DefaultKB":0}`},
		{"hugepagesz= hugepages=4", "want a size", `{"Requests":null,"DefaultKB":0}`},
		// The first count of a size is the kernel's; a second is ignored.
		{"hugepages=4 hugepages=8", "a second count", `{"Requests":[{"SizeKB":0,"Pages":4,"PerNode":null}],"DefaultKB":0}`},
		// A size named twice is ignored with its hugepages=.
		{"hugepagesz=2M hugepages=4 hugepagesz=2M hugepages=8", "size named twice",
			`{"Requests":[{"SizeKB":2048,"Pages":4,"PerNode":null}],"DefaultKB":0}`},
		{"default_hugepagesz=1G default_hugepagesz=2M hugepages=2", "given twice",
			`{"Requests":[{"SizeKB":0,"Pages":2,"PerNode":null}],"DefaultKB":1048576}`},
		// A bad size does not hide the next good pair.
		{"hugepagesz=7 hugepages=1 hugepagesz=1G hugepages=2", "hugepagesz=7",
			`{"Requests":[{"SizeKB":1048576,"Pages":2,"PerNode":null}],"DefaultKB":0}`},
	} {
		got, err := parseHugeCmdline(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("parseHugeCmdline(%q) error = %v; want one about %q", tc.in, err, tc.err)
		}
		if g := requestsJSON(t, got); g != tc.want {
			t.Errorf("parseHugeCmdline(%q) = %s; want %s", tc.in, g, tc.want)
		}
	}
}

func TestParseHugepagesize(t *testing.T) {
	for _, tc := range []struct {
		in     string
		kb     uint64
		ok     bool
		errHas string
	}{
		{"MemTotal: 1 kB\nHugepagesize:       2048 kB\nHugetlb: 0 kB\n", 2048, true, ""},
		{"MemTotal: 1 kB\n", 0, false, ""},
		{"Hugepagesize: 2048\n", 0, false, "want"},
		{"Hugepagesize: x kB\n", 0, false, "bad size"},
		{"Hugepagesize: 0 kB\n", 0, false, "bad size"},
	} {
		kb, ok, err := parseHugepagesize(tc.in)
		if kb != tc.kb || ok != tc.ok || (err == nil) != (tc.errHas == "") || err != nil && !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("parseHugepagesize(%q) = %d, %v, %v", tc.in, kb, ok, err)
		}
	}
}

// hugeTree is dgxTree booted with 1G pages per node and 2M pages spread
// by the kernel; node 1 got only 2 of its 4 1G pages, as on a node whose
// memory is fragmented. The sysfs files hold the bare count, as
// mm/hugetlb.c's nr_hugepages_show prints it.
func hugeTree(t *testing.T) *tree {
	tr := dgxTree(t)
	tr.file("/proc/cmdline", "BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=UUID=1234 ro hugepages=1024 hugepagesz=1G hugepages=0:4,1:4 quiet\n")
	tr.file("/proc/meminfo", "MemTotal:       16777216 kB\nMemFree:         1234 kB\nHugePages_Total:    1024\nHugepagesize:       2048 kB\n")
	for path, n := range map[string]string{
		"/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages":                 "6",
		"/sys/devices/system/node/node0/hugepages/hugepages-1048576kB/nr_hugepages": "4",
		"/sys/devices/system/node/node1/hugepages/hugepages-1048576kB/nr_hugepages": "2",
		"/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages":                    "1024",
		"/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages":    "512",
		"/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages":    "512",
	} {
		tr.file(path, n+"\n")
	}
	return tr
}

func TestDiscoverHugePages(t *testing.T) {
	tr := hugeTree(t)
	// Both sizes named, and the 2M pages from meminfo's default size.
	for _, cmdline := range []string{
		"ro hugepagesz=1G hugepages=0:4,1:4 hugepagesz=2M hugepages=1024\n",
		"ro hugepages=1024 hugepagesz=1G hugepages=0:4,1:4\n",
	} {
		tr.file("/proc/cmdline", cmdline)
		top, err := Discover(t.Context(), tr.fs())
		if err != nil {
			t.Fatal(err)
		}
		sameJSON(t, top.HugePages, []HugePages{
			{SizeKB: 2048, Requested: 1024, Allocated: 1024, AllocatedPerNode: []NodePages{{0, 512}, {1, 512}}},
			{SizeKB: 1048576, Requested: 8, RequestedPerNode: []NodePages{{0, 4}, {1, 4}}, Allocated: 6, AllocatedPerNode: []NodePages{{0, 4}, {1, 2}}},
		})
	}

	// Of the default size, from meminfo, and a size the kernel has no pool of.
	tr = hugeTree(t)
	tr.file("/proc/cmdline", "hugepages=1024 hugepagesz=16G hugepages=1\n")
	top, err := Discover(t.Context(), tr.fs())
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, top.HugePages, []HugePages{
		{SizeKB: 2048, Requested: 1024, Allocated: 1024, AllocatedPerNode: []NodePages{{0, 512}, {1, 512}}},
		{SizeKB: 16 << 20, Requested: 1, NoPool: true},
	})

	// Nothing reserved: nothing read.
	top, err = Discover(t.Context(), dgxTree(t).fs())
	if err != nil || top.HugePages != nil {
		t.Errorf("without hugepages= = %+v, %v", top.HugePages, err)
	}
}

func TestDiscoverHugePagesGarbage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(tr *tree)
		want   string
		check  func(t *testing.T, top Topology)
	}{
		{name: "nr_hugepages garbage", mutate: func(tr *tree) {
			tr.file("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "many\n")
		}, want: "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages: \"many\""},
		{name: "node nr_hugepages garbage", mutate: func(tr *tree) {
			tr.file("/sys/devices/system/node/node1/hugepages/hugepages-1048576kB/nr_hugepages", "-2\n")
		}, want: "node1/hugepages/hugepages-1048576kB/nr_hugepages",
			check: func(t *testing.T, top Topology) {
				if got := top.HugePages[1].AllocatedPerNode; len(got) != 1 || got[0].Node != 0 {
					t.Errorf("per node = %+v", got)
				}
			}},
		{name: "meminfo garbage", mutate: func(tr *tree) {
			tr.file("/proc/cmdline", "hugepages=16\n")
			tr.file("/proc/meminfo", "MemTotal:       16777216 kB\nHugepagesize: 2 MB\n")
		}, want: "/proc/meminfo: meminfo line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := hugeTree(t)
			tc.mutate(tr)
			top, err := Discover(t.Context(), tr.fs())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v; want one about %q", err, tc.want)
			}
			if tc.check != nil {
				tc.check(t, top)
			}
		})
	}
}

// Parameters the kernel ignores are the operator's to fix, not a failure
// to read the host: they are listed, and the rest is still read.
func TestDiscoverHugePagesIgnored(t *testing.T) {
	tr := hugeTree(t)
	tr.file("/proc/cmdline", "hugepages=x hugepagesz=1G hugepages=0:4,1:4 hugepages=2\n")
	top, err := Discover(t.Context(), tr.fs())
	if err != nil {
		t.Fatal(err)
	}
	if len(top.HugePages) != 1 || top.HugePages[0].Allocated != 6 {
		t.Errorf("huge pages = %+v", top.HugePages)
	}
	sameJSON(t, top.HugePagesIgnored, []string{
		`hugepages=x: "x": want a page count`,
		"hugepages=2: a second count for one size; the kernel keeps the first",
	})

	tr.file("/proc/cmdline", "hugepages=16\n")
	tr.file("/proc/meminfo", "MemTotal:       16777216 kB\n")
	top, err = Discover(t.Context(), tr.fs())
	if err != nil || top.HugePages != nil || len(top.HugePagesIgnored) != 1 || !strings.Contains(top.HugePagesIgnored[0], "no hugetlb support") {
		t.Errorf("without hugetlb = %+v, %q, %v", top.HugePages, top.HugePagesIgnored, err)
	}
}
