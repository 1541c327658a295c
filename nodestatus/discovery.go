package nodestatus

import (
	"fmt"
	"slices"
	"strings"

	"github.com/gpunode/gpunode/internal/source"
)

// maxMessage keeps condition messages to a readable line.
const maxMessage = 1024

// Discovery is the DiscoveryHealthy condition for one run of the discovery
// sources: True when every source ran (ok, or absent: no such hardware is
// normal), False naming each failed source and its error.
func Discovery(statuses []source.Status) Condition {
	var failed, absent []string
	for _, st := range statuses {
		switch st.State {
		case source.Error:
			failed = append(failed, fmt.Sprintf("%s: %s", st.Name, st.Message))
		case source.Absent:
			absent = append(absent, st.Name)
		}
	}
	slices.Sort(failed)
	slices.Sort(absent)
	if len(failed) > 0 {
		msg := strings.Join(failed, "; ")
		if len(msg) > maxMessage {
			msg = msg[:maxMessage-3] + "..."
		}
		return Condition{Type: DiscoveryHealthy, Status: False, Reason: "SourceFailed", Message: msg}
	}
	msg := fmt.Sprintf("all %d discovery sources ran", len(statuses))
	if len(absent) > 0 {
		msg += "; absent (no such hardware or library): " + strings.Join(absent, ", ")
	}
	return Condition{Type: DiscoveryHealthy, Status: True, Reason: "SourcesOK", Message: msg}
}
