package dashboards

import (
	"strings"
	"testing"
)

func TestSubstitute(t *testing.T) {
	values := map[string]string{"node": "(a|b)", "gpu": ".+"}
	for _, tc := range []struct{ in, want, err string }{
		{`x{node=~"$node"}`, `x{node=~"(a|b)"}`, ""},
		{`x{node=~"${node}", gpu=~"$gpu"}`, `x{node=~"(a|b)", gpu=~".+"}`, ""},
		{`rate(x[$__rate_interval])`, `rate(x[1m])`, ""},
		{`increase(x[$__range])`, `increase(x[1h])`, ""},
		{`x{device=~"$device"}`, "", "undefined variables [device]"},
		{`x{a=~"$"}`, `x{a=~"$"}`, ""},
		{``, ``, ""},
	} {
		got, err := Substitute(tc.in, values)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Substitute(%q): %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Substitute(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestLabelValues(t *testing.T) {
	for _, tc := range []struct{ def, sel, label string }{
		{`label_values(gpunode_build_info, node)`, "gpunode_build_info", "node"},
		{`label_values(x{a=~"$n", b="c,d"}, gpu)`, `x{a=~"$n", b="c,d"}`, "gpu"},
		{`label_values(node)`, "", ""},
		{`query_result(up)`, "", ""},
		{`label_values(x, 1bad)`, "", ""},
		{``, "", ""},
	} {
		sel, label, err := Variable{Name: "v", Definition: tc.def}.LabelValues()
		if tc.label == "" {
			if err == nil {
				t.Errorf("%q: accepted as (%q, %q)", tc.def, sel, label)
			}
			continue
		}
		if err != nil || sel != tc.sel || label != tc.label {
			t.Errorf("%q = (%q, %q, %v)", tc.def, sel, label, err)
		}
	}
	if got := Regex([]string{"gpu-a", "n.1", "meta-llama/Llama-3.1-8B"}); got != `(gpu-a|n\\.1|meta-llama/Llama-3\\.1-8B)` {
		t.Errorf("Regex = %s", got)
	}
}
