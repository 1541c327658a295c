package tuning

import (
	"strings"
	"testing"
)

// tcp_rmem, tcp_wmem and tcp_congestion_control are copied into a network
// namespace when it is created: pods that exist already keep the old
// values, which the plan must say, naming the settings.
func TestPlanSaysExistingPodsKeepNamespaceCopies(t *testing.T) {
	p := mustProfile(t, "name: t\nsysctl:\n  net.ipv4.tcp_rmem: 4096 87380 134217728\n  net.ipv4.tcp_congestion_control: bbr\n  net.core.rmem_max: 134217728\n")
	h := host()
	h.CongestionControl.Available = []string{"bbr", "cubic"}
	h.Current[ID{KindSysctl, "net.ipv4.tcp_rmem"}] = Current{Value: "4096 131072 6291456"}
	h.Current[ID{KindSysctl, "net.ipv4.tcp_congestion_control"}] = Current{Value: "bbr"}
	h.Current[ID{KindSysctl, "net.core.rmem_max"}] = Current{Value: "212992"}
	finding := func(pl Plan) string {
		for _, w := range pl.Warnings {
			if strings.Contains(w, "when it is created") {
				return w
			}
		}
		return ""
	}
	w := finding(MakePlan(p, h, nil))
	if !strings.Contains(w, "net.ipv4.tcp_rmem") || strings.Contains(w, "tcp_congestion_control") || strings.Contains(w, "rmem_max") {
		t.Errorf("to set: finding %q; want it naming tcp_rmem only (congestion control is already as wanted, rmem_max is global)", w)
	}
	// Applied this boot (in the journal) and now as wanted: pods older
	// than the apply still hold the old value.
	h.Current[ID{KindSysctl, "net.ipv4.tcp_rmem"}] = Current{Value: "4096 87380 134217728"}
	j := &Journal{Entries: []Entry{{Kind: KindSysctl, Key: "net.ipv4.tcp_rmem", Original: "4096 131072 6291456", Wrote: "4096 87380 134217728"}}}
	if w := finding(MakePlan(p, h, j)); !strings.Contains(w, "net.ipv4.tcp_rmem") {
		t.Errorf("applied: finding %q", w)
	}
	// Never changed by tuning and as wanted: nothing to say.
	if w := finding(MakePlan(p, h, nil)); w != "" {
		t.Errorf("untouched: finding %q", w)
	}
}
