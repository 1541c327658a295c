package tuning

import (
	"fmt"
	"strings"
)

// The dirty writeback limits come in pairs: a ratio and a byte count of
// which the kernel uses one. Writing either zeroes the other
// (mm/page-writeback.c: dirty_ratio_handler sets vm_dirty_bytes = 0 and
// dirty_bytes_handler vm_dirty_ratio = 0; Documentation/admin-guide/
// sysctl/vm.rst: "Only one of them may be specified at a time ... the
// other appears as 0 when read"). Tuning treats each pair as one setting:
// both members are journaled, and revert writes back only the member
// that was in use, since writing the other's 0 would zero it again.
var dirtyPairs = map[string]string{
	"vm.dirty_ratio":            "vm.dirty_bytes",
	"vm.dirty_bytes":            "vm.dirty_ratio",
	"vm.dirty_background_ratio": "vm.dirty_background_bytes",
	"vm.dirty_background_bytes": "vm.dirty_background_ratio",
}

// canonicalKey spells a sysctl key with dots ("vm/dirty_ratio" ->
// "vm.dirty_ratio"); keys with dots inside a component stay as they are.
func canonicalKey(key string) string {
	p, err := SysctlPath(key)
	if err != nil {
		return key
	}
	rest := strings.TrimPrefix(p, "/proc/sys/")
	if strings.Contains(key, "/") && strings.Contains(strings.ReplaceAll(rest, "/", ""), ".") {
		return key
	}
	return strings.ReplaceAll(rest, "/", ".")
}

// pairPartner returns the other member of a sysctl's pair.
func pairPartner(id ID) (ID, bool) {
	if id.Kind != KindSysctl {
		return ID{}, false
	}
	other, ok := dirtyPairs[canonicalKey(id.Key)]
	if !ok {
		return ID{}, false
	}
	return ID{KindSysctl, other}, true
}

// inUse reports whether a pair member's value is the one the kernel uses:
// the other reads 0.
func inUse(v string) bool { return v != "" && v != "0" }

// partnerNote tells, on a set step, that the write zeroes the partner.
func partnerNote(id ID, h Host) string {
	pid, ok := pairPartner(id)
	if !ok {
		return ""
	}
	cur := h.Current[pid]
	if cur.Err != "" || cur.Unsupported || !inUse(cur.Value) {
		return ""
	}
	return fmt.Sprintf("the kernel zeroes %s (now %s) when this is written; both are journaled and revert writes back %s", pid.Key, cur.Value, pid.Key)
}

// pairRestores makes the restore steps of a pair one restore: only the
// member in use originally (its original is not 0) is written; the other
// is restored by that write (Via). If someone else changed either member
// since tuning wrote it, both are kept. A ratio whose original is 0 with
// no partner in the journal (journaled by an older agent that did not
// record the byte count in use) is kept too: writing 0 would leave both 0.
func pairRestores(steps []Step, h Host, j *Journal) {
	idx := map[ID]int{}
	for i, s := range steps {
		if s.Action == ActionRestore || s.Action == ActionKept {
			idx[s.ID] = i
		}
	}
	for id, i := range idx {
		pid, ok := pairPartner(id)
		if !ok {
			continue
		}
		k, both := idx[pid]
		if !both {
			if e, ok := j.entry(id); ok && !inUse(e.Original) && steps[i].Action == ActionRestore && !h.Current[pid].Unsupported {
				steps[i].Action = ActionKept
				steps[i].Note = fmt.Sprintf("the original 0 means %s was in use, but its value was not journaled: writing 0 would leave both at 0 (every writer throttled); left as it is, set %s by hand", pid.Key, pid.Key)
			}
			continue
		}
		if id.Key > pid.Key {
			continue // each pair once
		}
		a, b := &steps[i], &steps[k]
		if a.Action == ActionKept || b.Action == ActionKept {
			for _, s := range []*Step{a, b} {
				if s.Action != ActionKept {
					s.Action = ActionKept
					s.Note = "its pair member was changed by someone else since tuning wrote it: writing this one would zero theirs, so both are kept"
				}
			}
			continue
		}
		// The writer is the member in use originally; with neither (both
		// 0, as a ratio host with a lost partner never is), the ratio.
		writer, follower := a, b
		ea, _ := j.entry(a.ID)
		eb, _ := j.entry(b.ID)
		if inUse(eb.Original) || (!inUse(ea.Original) && strings.HasSuffix(b.Key, "_ratio")) {
			writer, follower = b, a
		}
		follower.Via = writer.Key
		follower.Note = fmt.Sprintf("restored by writing %s (the kernel zeroes this one)", writer.Key)
	}
}
