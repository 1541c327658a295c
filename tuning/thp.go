package tuning

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/gpunode/gpunode/internal/hostfs"
)

// THPDefragPath is the transparent hugepage defrag mode file: how hard a
// page fault works (direct reclaim and compaction) for a huge page.
const THPDefragPath = "/sys/kernel/mm/transparent_hugepage/defrag"

// thpDefragModes are the modes of THPDefragPath
// (Documentation/admin-guide/mm/transhuge.rst), in the kernel's order.
var thpDefragModes = []string{"always", "defer", "defer+madvise", "madvise", "never"}

// thpPath maps a KindTHP key to its file.
func thpPath(key string) (string, error) {
	switch key {
	case THPKey:
		return THPPath, nil
	case THPDefragKey:
		return THPDefragPath, nil
	}
	return "", fmt.Errorf("unknown transparent hugepage setting %q", key)
}

// isChoiceFile reports whether path is a sysfs multiple-choice attribute:
// written as one word, read as every choice with the selected one in
// brackets.
func isChoiceFile(path string) bool { return path == THPPath || path == THPDefragPath }

// emulateChoice makes a file that is not on sysfs (a fixture or simulated
// node's tree, which stores the word written) read as the kernel prints
// the attribute after the write: the choices of old with v selected. On
// sysfs the kernel does this itself and nothing is rewritten.
func emulateChoice(fsys hostfs.FS, path, old, v string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(fsys.Path(path), &st); err != nil || st.Type == unix.SYSFS_MAGIC {
		return nil
	}
	words := strings.Fields(strings.NewReplacer("[", "", "]", "").Replace(old))
	found := false
	for i, w := range words {
		if w == v {
			words[i], found = "["+w+"]", true
		}
	}
	if !found {
		return nil // not a choice the tree offers: left as written
	}
	return os.WriteFile(fsys.Path(path), []byte(strings.Join(words, " ")+"\n"), 0o644)
}
