package verify

import (
	"fmt"
	"slices"
	"strings"

	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/snapshot"
)

const sourceRemedy = "a source failed (see its message and the agent log): fix the driver or library it reads, then re-run"

// discoverySources fails when a discovery source failed: the facts the
// other checks judge are then incomplete, and a check that skips for want
// of hardware may be wrong. A GPU backend that failed because the node's
// GPUs are on PCI but the backend cannot read them (snapshot's
// GPUsWithoutBackend) gets that fix as its remedy.
func discoverySources() Check {
	return Check{
		Name: "discovery", Severity: Critical,
		Summary: "every discovery source ran (ok, or absent: no such hardware), so the other checks see the whole node; a GPU backend absent while the PCI bus shows GPUs bound to its driver has failed",
		Remedy:  sourceRemedy,
		run: func(s *snapshot.Snapshot, _ Options) []finding {
			var failed, ran, fixes []string
			others := false
			for _, st := range s.Sources {
				ran = append(ran, st.Name+" "+string(st.State))
				if st.State != source.Error {
					continue
				}
				msg := st.Message
				if g, ok := withoutBackend(s, st.Name); ok {
					// The remedy says the fix; the row need not say it twice.
					msg = strings.TrimSuffix(msg, "; "+g.Fix)
					if !slices.Contains(fixes, g.Fix) {
						fixes = append(fixes, g.Fix)
					}
				} else {
					others = true
				}
				failed = append(failed, fmt.Sprintf("%s: %s", st.Name, msg))
			}
			if len(ran) == 0 {
				return []finding{skip(Node, "no discovery sources ran")}
			}
			if len(failed) == 0 {
				return []finding{pass(Node, strings.Join(ran, ", "), "every source ok or absent")}
			}
			f := bad(Node, strings.Join(failed, "; "), "every source ok or absent")
			if len(fixes) > 0 {
				if others {
					fixes = append(fixes, "other sources: "+sourceRemedy)
				}
				f.remedy = strings.Join(fixes, "; ")
			}
			return []finding{f}
		},
	}
}

// withoutBackend finds the GPUs on PCI the named backend source could not
// read.
func withoutBackend(s *snapshot.Snapshot, name string) (snapshot.GPUsWithoutBackend, bool) {
	for _, g := range s.GPUsWithoutBackend {
		if slices.Contains(g.Backends, name) {
			return g, true
		}
	}
	return snapshot.GPUsWithoutBackend{}, false
}
