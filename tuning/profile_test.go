package tuning

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuiltins(t *testing.T) {
	if got := strings.Join(BuiltinNames(), ","); got != "llm-d-reference,llm-inference,none,roce-lossless" {
		t.Fatalf("built-in profiles: %s", got)
	}
	for _, name := range BuiltinNames() {
		p, err := Builtin(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if p.Name != name {
			t.Errorf("built-in %s is named %q", name, p.Name)
		}
	}
	inf, _ := Builtin("llm-inference")
	for k, v := range map[string]string{
		"net.core.rmem_max": "134217728", "net.core.wmem_max": "134217728",
		"net.ipv4.tcp_rmem": "4096 87380 134217728", "net.ipv4.tcp_wmem": "4096 65536 134217728",
		"net.ipv4.tcp_congestion_control": "bbr", "vm.swappiness": "1",
		"vm.dirty_ratio": "15", "vm.dirty_background_ratio": "5",
	} {
		if string(inf.Sysctl[k]) != v {
			t.Errorf("llm-inference %s = %q, want %q", k, inf.Sysctl[k], v)
		}
	}
	if inf.NUMA.Balancing == nil || *inf.NUMA.Balancing != 0 || len(inf.IRQ.Policies) != 1 || inf.IRQ.Policies[0].Policy != PolicyNICLocal {
		t.Errorf("llm-inference NUMA/IRQ: %+v %+v", inf.NUMA, inf.IRQ)
	}
	ref, _ := Builtin("llm-d-reference")
	if len(ref.Sysctl) != 12 || ref.NUMA.Balancing == nil || *ref.NUMA.Balancing != 2 {
		t.Errorf("llm-d-reference has %d sysctls and balancing %v, want the guide's 12 and 2", len(ref.Sysctl), ref.NUMA.Balancing)
	}
	none, _ := Builtin("none")
	if len(none.Sysctl) != 0 || none.NUMA.Balancing != nil || len(none.IRQ.Policies) != 0 {
		t.Errorf("none manages something: %+v", none)
	}
	if _, err := Builtin("llm"); err == nil || !strings.Contains(err.Error(), "llm-inference") {
		t.Errorf("unknown profile error does not list the built-ins: %v", err)
	}
}

func TestParseProfileValues(t *testing.T) {
	p, err := ParseProfile([]byte(`
name: custom
sysctl:
  net.ipv4.tcp_rmem: [4096, 87380, 0x8000000]
  net.ipv4.tcp_wmem: "4096	65536   134217728"
  net/ipv4/conf/eth0.100/rp_filter: 2
  kernel.watchdog_cpumask: 0-3
  vm.swappiness: 10
numa:
  balancing: 0
  transparentHugepages: never
irq:
  policies:
    - policy: nic-local
      drivers: [mlx5_core]
      devices: [mlx5_0, eth1, "0000:18:00.0"]
    - policy: gpu-local
  excludeCPUs: 0-1
  irqbalance: stop
`))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"net.ipv4.tcp_rmem":                "4096 87380 134217728", // YAML hex ints become decimal
		"net.ipv4.tcp_wmem":                "4096 65536 134217728",
		"net/ipv4/conf/eth0.100/rp_filter": "2",
		"kernel.watchdog_cpumask":          "0-3",
	} {
		if string(p.Sysctl[k]) != v {
			t.Errorf("%s = %q, want %q", k, p.Sysctl[k], v)
		}
	}
}

// Garbage is rejected with the key and the reason, every problem at once.
func TestParseProfileRejects(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"", "empty profile"},
		{"name: x\n---\nname: y\n", "more than one YAML document"},
		{"name: Bad_Name\n", `name: "Bad_Name"`},
		{"name: x\nsysctls: {}\n", `unknown key "sysctls"`},
		{"name: x\nnuma:\n  balance: 1\n", `unknown key "balance" in numa`},
		{"name: x\nirq:\n  policies:\n    - policy: nic-local\n      driver: [x]\n", `unknown key "driver" in irq.policies`},
		{"name: x\nsysctl:\n  vm.swappiness: 1\n  vm.swappiness: 2\n", "already defined"},
		{"name: x\nsysctl:\n  vm.swappiness: true\n", "write 1 or 0, not true or false"},
		{"name: x\nsysctl:\n  vm.swappiness: 1.5\n", "\"1.5\" is not an integer"},
		{"name: x\nsysctl:\n  vm.swappiness: {a: 1}\n", "want a number, a string or a list"},
		{"name: x\nsysctl:\n  vm.swappiness:\n", "empty value"},
		{"name: x\nsysctl:\n  vm.swappiness: 300\n", "sysctl.vm.swappiness: value 300 out of range 0..200"},
		{"name: x\nsysctl:\n  vm.swappiness: -1\n", "sysctl.vm.swappiness: value -1 out of range"},
		{"name: x\nsysctl:\n  vm.swappiness: \"010\"\n", "leading zeros"},
		{"name: x\nsysctl:\n  vm.swappiness: \"0x10\"\n", "write numbers in decimal"},
		{"name: x\nsysctl:\n  vm.swappiness: \"+1\"\n", "without '+'"},
		{"name: x\nsysctl:\n  vm.swappiness: 99999999999999999999\n", "out of range"},
		{"name: x\nsysctl:\n  net.ipv4.tcp_rmem: 4096 87380\n", "sysctl.net.ipv4.tcp_rmem: value \"4096 87380\": want 3 integer(s)"},
		{"name: x\nsysctl:\n  net.ipv4.tcp_rmem: 4096 87380 1000\n", "min <= default <= max"},
		{"name: x\nsysctl:\n  net.ipv4.tcp_rmem: 4096 big 134217728\n", "\"big\" is not an integer"},
		{"name: x\nsysctl:\n  net.ipv4.tcp_congestion_control: BBR!\n", "one lower-case word"},
		{"name: x\nsysctl:\n  kernel.numa_balancing: 0\n", "set it with numa.balancing"},
		{"name: x\nsysctl:\n  ../../etc/passwd: 1\n", "empty or relative component"},
		{"name: x\nsysctl:\n  custom.key: \"1\\x012\"\n", "control characters"},
		{"name: x\nsysctl:\n  net.core.rmem_max: 1\n  net/core/rmem_max: 2\n", "the same sysctl as net.core.rmem_max"},
		{"name: x\nsysctl:\n  custom.key: " + strings.Repeat("a", 1100) + "\n", "longer than 1024"},
		{"name: x\nnuma:\n  balancing: 4\n", "numa.balancing: 4"},
		{"name: x\nnuma:\n  transparentHugepages: sometimes\n", "numa.transparentHugepages: \"sometimes\""},
		{"name: x\nnuma:\n  transparentHugepageDefrag: defer+always\n", "numa.transparentHugepageDefrag: \"defer+always\""},
		{"name: x\nirq:\n  policies:\n    - policy: all-cpus\n", "irq.policies[0].policy: \"all-cpus\""},
		{"name: x\nirq:\n  policies:\n    - policy: nic-local\n    - policy: nic-local\n", "nic-local given twice"},
		{"name: x\nirq:\n  policies:\n    - policy: gpu-local\n      minSpeedMbps: 100\n", "only nic-local selects by link speed"},
		{"name: x\nirq:\n  policies:\n    - policy: nic-local\n      devices: [\"a b\"]\n", "is not a device name"},
		{"name: x\nirq:\n  policies:\n    - policy: nic-local\n  excludeCPUs: 3-1\n", "irq.excludeCPUs"},
		{"name: x\nirq:\n  policies:\n    - policy: nic-local\n  irqbalance: kill\n", "irq.irqbalance: \"kill\""},
		{"name: x\nirq:\n  irqbalance: stop\n", "there is no IRQ policy"},
	} {
		_, err := ParseProfile([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseProfile(%q): %v, want an error containing %q", tc.yaml, err, tc.want)
		}
	}
	// Every problem is reported, not just the first.
	_, err := ParseProfile([]byte("name: x\nsysctl:\n  vm.swappiness: 300\n  vm.dirty_ratio: 101\nnuma:\n  balancing: 9\n"))
	for _, w := range []string{"vm.swappiness", "vm.dirty_ratio", "numa.balancing"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("combined error lacks %s: %v", w, err)
		}
	}
}

func TestLoadProfile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "mine.yaml")
	os.WriteFile(file, []byte("name: mine\nsysctl:\n  vm.swappiness: 5\n"), 0o644)
	p, err := LoadProfile(file)
	if err != nil || p.Name != "mine" {
		t.Fatalf("LoadProfile(file) = %+v, %v", p, err)
	}
	if p, err := LoadProfile(""); err != nil || p.Name != DefaultProfile {
		t.Errorf("LoadProfile(\"\") = %q, %v", p.Name, err)
	}
	os.WriteFile(file, []byte("name: mine\nsysctl:\n  vm.swappiness: lots\n"), 0o644)
	if _, err := LoadProfile(file); err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "vm.swappiness") {
		t.Errorf("bad file: %v", err)
	}
	if _, err := LoadProfile(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("missing file accepted")
	}
	big := filepath.Join(dir, "big.yaml")
	os.WriteFile(big, make([]byte, maxProfileSize+10), 0o644)
	if _, err := LoadProfile(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized file: %v", err)
	}
}

// Whatever the input, decoding either fails or yields a valid profile
// whose sysctl values are normalized and writable as one line.
func FuzzParseProfile(f *testing.F) {
	for _, name := range BuiltinNames() {
		src, _ := BuiltinSource(name)
		f.Add(src)
	}
	for _, s := range []string{
		"name: x\nsysctl:\n  a.b: [1, \"2\", 3]\n",
		"name: x\nsysctl:\n  a.b: 0o17\n",
		"name: x\nirq:\n  policies: [{policy: nic-local, devices: [eth0]}]\n  excludeCPUs: 0-3:2/4\n",
		"name: x\nnuma: {balancing: 3, transparentHugepages: never}\n",
		"name: x\nsysctl: {\"net/ipv4/conf/eth0.1/x\": 1}\n",
		"{", "name: [1]\n", "sysctl: !!binary aGVsbG8=\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseProfile(b)
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("decoded profile fails validation: %v", err)
		}
		for k, v := range p.Sysctl {
			if _, err := SysctlPath(k); err != nil {
				t.Fatalf("key %q accepted: %v", k, err)
			}
			if string(v) != NormalizeValue(string(v)) || v == "" || strings.ContainsAny(string(v), "\n\x00") {
				t.Fatalf("value %q of %s not normalized", v, k)
			}
		}
	})
}
