package vm

import (
	"bufio"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// archive is an initramfs being assembled: the newc cpio format the
// kernel unpacks (Documentation/driver-api/early-userspace/buffer-format.rst).
type archive struct {
	w     *bufio.Writer
	ino   uint32
	dirs  map[string]bool
	files map[string]bool
}

func newArchive(w io.Writer) *archive {
	return &archive{w: bufio.NewWriter(w), ino: 1, dirs: map[string]bool{"": true, "/": true}, files: map[string]bool{}}
}

// header writes one newc header and name, padded to 4 bytes.
func (a *archive) header(name string, mode uint32, size int) error {
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	a.ino++
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize, check
	_, err := fmt.Fprintf(a.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		a.ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	if err != nil {
		return err
	}
	if _, err := a.w.WriteString(name + "\x00"); err != nil {
		return err
	}
	return a.pad(110 + len(name) + 1)
}

func (a *archive) pad(n int) error {
	if r := n % 4; r != 0 {
		_, err := a.w.Write(make([]byte, 4-r))
		return err
	}
	return nil
}

// mkdirAll adds a directory and its parents.
func (a *archive) mkdirAll(dir string) error {
	dir = path.Clean("/" + dir)
	if a.dirs[dir] {
		return nil
	}
	if err := a.mkdirAll(path.Dir(dir)); err != nil {
		return err
	}
	a.dirs[dir] = true
	return a.header(dir, 0o040755, 0)
}

// file adds a regular file; a second file at one path is a mistake.
func (a *archive) file(name string, data []byte, perm fs.FileMode) error {
	name = path.Clean("/" + name)
	if a.files[name] {
		return fmt.Errorf("initramfs: %s added twice", name)
	}
	a.files[name] = true
	if err := a.mkdirAll(path.Dir(name)); err != nil {
		return err
	}
	if err := a.header(name, 0o100000|uint32(perm.Perm()), len(data)); err != nil {
		return err
	}
	if _, err := a.w.Write(data); err != nil {
		return err
	}
	return a.pad(len(data))
}

// symlink adds a symbolic link.
func (a *archive) symlink(name, target string) error {
	name = path.Clean("/" + name)
	if a.files[name] {
		return nil
	}
	a.files[name] = true
	if err := a.mkdirAll(path.Dir(name)); err != nil {
		return err
	}
	if err := a.header(name, 0o120777, len(target)); err != nil {
		return err
	}
	if _, err := a.w.WriteString(target); err != nil {
		return err
	}
	return a.pad(len(target))
}

// hostFile copies a host file (following symlinks) to guest path name.
func (a *archive) hostFile(name, hostPath string) error {
	if a.files[path.Clean("/"+name)] {
		return nil // a library two binaries share
	}
	data, err := os.ReadFile(hostPath)
	if err != nil {
		return err
	}
	st, err := os.Stat(hostPath)
	if err != nil {
		return err
	}
	return a.file(name, data, st.Mode())
}

func (a *archive) close() error {
	if err := a.header("TRAILER!!!", 0, 0); err != nil {
		return err
	}
	return a.w.Flush()
}

// modinfoDepends reads the depends= field of a module's .modinfo section.
func modinfoDepends(ko string) ([]string, error) {
	f, err := elf.Open(ko)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("%s: no .modinfo section", ko)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ko, err)
	}
	return parseModinfoDepends(data), nil
}

// parseModinfoDepends extracts "depends=a,b" from NUL-separated key=value
// pairs.
func parseModinfoDepends(data []byte) []string {
	for _, kv := range strings.Split(string(data), "\x00") {
		if v, ok := strings.CutPrefix(kv, "depends="); ok {
			var deps []string
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					deps = append(deps, modName(d))
				}
			}
			return deps
		}
	}
	return nil
}

// modName normalizes a module name as the kernel does ('-' and '_' are one).
func modName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// moduleSet resolves module names to files under a kernel's modules
// directory, with their dependencies, in load order (dependencies first).
type moduleSet struct {
	// order lists relative paths ("kernel/net/ipv4/tcp_bbr.ko") in load order.
	order []string
	// deps maps each relative path to its direct dependencies' paths.
	deps map[string][]string
}

func resolveModules(modDir string, names []string) (moduleSet, error) {
	index := map[string]string{} // name -> relative path
	err := filepath.WalkDir(filepath.Join(modDir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".ko") {
			rel, _ := filepath.Rel(modDir, p)
			index[modName(strings.TrimSuffix(d.Name(), ".ko"))] = filepath.ToSlash(rel)
		}
		return nil
	})
	if err != nil {
		return moduleSet{}, fmt.Errorf("index modules: %w", err)
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(modDir, "modules.builtin")); err == nil {
		for line := range strings.Lines(string(b)) {
			builtin[modName(strings.TrimSuffix(path.Base(strings.TrimSpace(line)), ".ko"))] = true
		}
	}
	set := moduleSet{deps: map[string][]string{}}
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, from string) error
	visit = func(name, from string) error {
		name = modName(name)
		rel, ok := index[name]
		if !ok {
			if builtin[name] {
				return nil
			}
			if from != "" {
				return fmt.Errorf("module %s (needed by %s) not found under %s", name, from, modDir)
			}
			return fmt.Errorf("module %s not found under %s", name, modDir)
		}
		switch state[rel] {
		case 1:
			return fmt.Errorf("module dependency cycle at %s", name)
		case 2:
			return nil
		}
		state[rel] = 1
		deps, err := modinfoDepends(filepath.Join(modDir, rel))
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
			if drel, ok := index[d]; ok {
				set.deps[rel] = append(set.deps[rel], drel)
			}
		}
		state[rel] = 2
		set.order = append(set.order, rel)
		return nil
	}
	for _, n := range names {
		if err := visit(n, ""); err != nil {
			return moduleSet{}, err
		}
	}
	return set, nil
}

// modulesDep formats modules.dep for the modules in the set, as depmod
// does: each module, then its dependencies closure with the ones to load
// first last (modprobe loads the list from the end).
func (s moduleSet) modulesDep() string {
	var b strings.Builder
	for _, rel := range slices.Sorted(slices.Values(s.order)) {
		var closure []string
		seen := map[string]bool{}
		var walk func(string)
		walk = func(m string) {
			for _, d := range s.deps[m] {
				if !seen[d] {
					seen[d] = true
					walk(d)
					closure = append(closure, d)
				}
			}
		}
		walk(rel)
		slices.Reverse(closure)
		fmt.Fprintf(&b, "%s:", rel)
		for _, d := range closure {
			fmt.Fprintf(&b, " %s", d)
		}
		b.WriteString("\n")
	}
	return b.String()
}
