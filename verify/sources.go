package verify

import (
	"fmt"
	"strings"

	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/snapshot"
)

// discoverySources fails when a discovery source failed: the facts the
// other checks judge are then incomplete, and a check that skips for want
// of hardware may be wrong.
func discoverySources() Check {
	return Check{
		Name: "discovery", Severity: Critical,
		Summary: "every discovery source ran (ok, or absent: no such hardware), so the other checks see the whole node",
		Remedy:  "a source failed (see its message and the agent log): fix the driver or library it reads, then re-run",
		run: func(s *snapshot.Snapshot, _ Options) []finding {
			var failed, ran []string
			for _, st := range s.Sources {
				ran = append(ran, st.Name+" "+string(st.State))
				if st.State == source.Error {
					failed = append(failed, fmt.Sprintf("%s: %s", st.Name, st.Message))
				}
			}
			if len(ran) == 0 {
				return []finding{skip(Node, "no discovery sources ran")}
			}
			if len(failed) > 0 {
				return []finding{bad(Node, strings.Join(failed, "; "), "every source ok or absent")}
			}
			return []finding{pass(Node, strings.Join(ran, ", "), "every source ok or absent")}
		},
	}
}
