package config

import (
	"strings"
	"testing"
)

func TestTuningConfig(t *testing.T) {
	c, err := Parse([]byte(`
tuning:
  mode: enforce
  interval: 30s
  stateDir: /var/lib/gpunode-test
  customProfile:
    name: site
    sysctl:
      vm.swappiness: 10
      net.ipv4.tcp_rmem: [4096, 87380, 67108864]
    irq:
      policies:
        - policy: nic-local
          drivers: [mlx5_core]
      irqbalance: stop
`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Tuning.ResolveProfile()
	if err != nil || p.Name != "site" || p.Sysctl["net.ipv4.tcp_rmem"] != "4096 87380 67108864" || p.IRQ.IRQBalance != "stop" {
		t.Fatalf("inline profile: %+v %v", p, err)
	}
	if d := Default().Tuning; d.Mode != "audit" || d.Profile != "llm-inference" || d.StateDir != "/var/lib/gpunode" ||
		d.ReadinessTaint != (ReadinessTaint{Key: "gpunode.dev/tuning"}) {
		t.Errorf("defaults %+v", d)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"tuning:\n  mode: on\n", `tuning.mode: must be enforce, audit, revert or off, got "on"`},
		{"tuning:\n  interval: 10ms\n", "tuning.interval: must be at least 1s"},
		{"tuning:\n  stateDir: state\n", "tuning.stateDir: must be an absolute path"},
		{"tuning:\n  profile: turbo\n", `tuning.profile: unknown profile "turbo"`},
		{"tuning:\n  profile: /nonexistent/p.yaml\n", "tuning.profile: profile: open /nonexistent/p.yaml"},
		{"tuning:\n  customProfile:\n    name: x\n    sysctl:\n      vm.swappiness: 900\n", "tuning.customProfile: sysctl.vm.swappiness: value 900 out of range"},
		{"tuning:\n  customProfile:\n    name: x\n    numa:\n      balanse: 1\n", `unknown key "balanse" in tuning.customProfile.numa`},
		{"tuning:\n  profile: none\n  customProfile:\n    name: x\n", "both given"},
		{"tuning:\n  mdoe: off\n", `unknown key "mdoe" in tuning`},
		{"tuning:\n  readinessTaint:\n    enabled: true\n    key: 'not a key'\n", `tuning.readinessTaint.key: must be a label key such as gpunode.dev/tuning, got "not a key"`},
		{"tuning:\n  profiles: [llm-inference, turbo]\n", `tuning.profiles: unknown profile "turbo"`},
		{"tuning:\n  profiles: [llm-inference, llm-d-reference]\n", "tuning.profiles: compose llm-inference, llm-d-reference: numa.balancing: llm-inference wants 0, llm-d-reference wants 2"},
		{"tuning:\n  profile: none\n  profiles: [roce-lossless]\n", "tuning.profiles: given with tuning.profile"},
		{"tuning:\n  customProfile:\n    name: x\n    roce:\n      pfc: [9]\n", "tuning.customProfile: roce.pfc: priority 9"},
		{"tuning:\n  customProfile:\n    name: x\n    roce:\n      pcf: [3]\n", `unknown key "pcf" in tuning.customProfile.roce`},
	} {
		if _, err := Parse([]byte(tc.yaml)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.want)
		}
	}
	// tuning.profiles composes (tuning.Compose).
	c, err = Parse([]byte("tuning:\n  profiles: [llm-inference, roce-lossless]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p, err := c.Tuning.ResolveProfile(); err != nil || p.Name != "llm-inference.roce-lossless" || p.RoCE.DefaultMode != "RoCE v2" || p.Sysctl["vm.swappiness"] != "1" {
		t.Errorf("composed profile: %+v %v", p, err)
	}
	// Modes off and revert do not need a loadable profile.
	for _, mode := range []string{"off", "revert"} {
		if c, err := Parse([]byte("tuning:\n  mode: " + mode + "\n  profile: turbo\n")); err != nil || c.Tuning.Mode != mode {
			t.Errorf("mode %s: %v", mode, err)
		}
	}
}
