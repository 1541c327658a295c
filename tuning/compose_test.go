package tuning

import (
	"strings"
	"testing"
)

// llm-inference and roce-lossless compose: every setting of both, named
// by both, whatever the order of the parts.
func TestComposeBuiltins(t *testing.T) {
	inf, roce := builtin(t, "llm-inference"), builtin(t, "roce-lossless")
	p, err := Compose(inf, roce)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "llm-inference.roce-lossless" || !strings.Contains(p.Description, "; RoCE v2") {
		t.Errorf("name %q, description %q", p.Name, p.Description)
	}
	if len(p.Sysctl) != len(inf.Sysctl) || p.Sysctl["vm.swappiness"] != "1" || *p.NUMA.Balancing != 0 || p.NUMA.TransparentHugepages != "madvise" ||
		len(p.IRQ.Policies) != 1 || p.IRQ.IRQBalance != IRQBalanceCoexist {
		t.Errorf("llm-inference's settings lost: %+v", p)
	}
	if p.RoCE.DefaultMode != "RoCE v2" || len(p.RoCE.PFC) != 1 || p.RoCE.PFC[0] != 3 || len(p.RoCE.ECN) != 1 {
		t.Errorf("roce-lossless's settings lost: %+v", p.RoCE)
	}
	q, err := Compose(roce, inf)
	if err != nil {
		t.Fatal(err)
	}
	q.Name, q.Description = p.Name, p.Description
	if a, b := profileYAML(t, p), profileYAML(t, q); a != b {
		t.Errorf("the order of the parts matters:\n%s\n%s", a, b)
	}
	// The comma spelling of --profile composes the same.
	r, err := LoadProfile("llm-inference, roce-lossless")
	if err != nil || profileYAML(t, r) != profileYAML(t, p) {
		t.Errorf("LoadProfile with a comma: %v", err)
	}
}

func profileYAML(t *testing.T, p Profile) string {
	t.Helper()
	m, err := profileMap(p)
	if err != nil {
		t.Fatal(err)
	}
	return yamlText(m)
}

// Settings both parts give must agree; every disagreement is reported by
// key with both values, and nothing is composed.
func TestComposeConflicts(t *testing.T) {
	a := mustProfile(t, "name: a\nsysctl:\n  vm.swappiness: 1\n  vm.dirty_ratio: 15\nnuma:\n  balancing: 0\nroce:\n  pfc: [3]\n")
	b := mustProfile(t, "name: b\nsysctl:\n  vm.swappiness: 10\n  vm.dirty_ratio: 15\nroce:\n  pfc: [3, 4]\n  ecn: [3]\n")
	_, err := Compose(a, b)
	if err == nil {
		t.Fatal("conflicting profiles composed")
	}
	for _, want := range []string{"sysctl.vm.swappiness: a wants \"1\", b wants \"10\"", "roce.pfc: a wants [3], b wants [3, 4]"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "dirty_ratio") || strings.Contains(err.Error(), "ecn") {
		t.Errorf("agreeing or single settings reported: %v", err)
	}
	if _, err := Compose(a, a); err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Errorf("a profile composed with itself: %v", err)
	}
	// A merge can make a combination one profile alone could not hold.
	c := mustProfile(t, "name: c\nsysctl:\n  vm.dirty_bytes: 1000000\n")
	if _, err := Compose(a, c); err == nil || !strings.Contains(err.Error(), "set only one") {
		t.Errorf("dirty_ratio and dirty_bytes from two parts: %v", err)
	}
	if _, err := LoadProfile("llm-inference,,none"); err == nil {
		t.Error("an empty name in the list was accepted")
	}
}
