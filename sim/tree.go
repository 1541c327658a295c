package sim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
)

// tree collects a host filesystem in memory and then writes it under a
// root. Collecting first lets a node description claim paths in any order,
// catches two writers of one path (a description mistake) and lets the
// write itself run in parallel: --simulate builds a tree on every start.
type tree struct {
	kinds   map[string]kind // claimed host path -> what it is
	dirs    []string
	entries []entry
	errs    []error
}

type kind uint8

const (
	kindDir kind = iota + 1
	kindFile
	kindLink
)

// entry is a regular file (target empty) or a symlink.
type entry struct {
	path   string
	data   string
	target string
}

func newTree() *tree {
	return &tree{kinds: make(map[string]kind, 8192)}
}

// file adds a regular file with the given content.
func (t *tree) file(path, content string) {
	if t.claim(path, kindFile) {
		t.entries = append(t.entries, entry{path: path, data: content})
	}
}

// filef adds a file whose content is a format plus a trailing newline, the
// way sysfs attributes read.
func (t *tree) filef(path, format string, args ...any) {
	t.file(path, fmt.Sprintf(format, args...)+"\n")
}

// attr adds a sysfs-style file: value and newline.
func (t *tree) attr(path, value string) { t.file(path, value+"\n") }

// link adds a symlink at path to the host path target. Links are written
// relative, as sysfs has them, so the tree works under any root.
func (t *tree) link(path, target string) {
	rel, err := filepath.Rel(filepath.Dir(path), target)
	if err != nil {
		t.fail(fmt.Errorf("link %s -> %s: %w", path, target, err))
		return
	}
	// sysfs climbs to the target's parent and names the target, so a link
	// to an ancestor reads "../../../0000:18:00.0", not "../..".
	if rel == ".." || strings.HasSuffix(rel, "/..") {
		rel += "/../" + filepath.Base(target)
	}
	if t.claim(path, kindLink) {
		t.entries = append(t.entries, entry{path: path, target: rel})
	}
}

// dir adds a directory (and its parents); adding one twice is fine.
func (t *tree) dir(path string) {
	if k := t.kinds[path]; k == kindDir {
		return
	}
	t.claim(path, kindDir)
}

// claim records path and its parent directories; it reports false (and
// records an error) when the path is already something else.
func (t *tree) claim(path string, k kind) bool {
	if !strings.HasPrefix(path, "/") || path != filepath.Clean(path) || path == "/" {
		t.fail(fmt.Errorf("bad host path %q", path))
		return false
	}
	if _, ok := t.kinds[path]; ok {
		t.fail(fmt.Errorf("%s written twice", path))
		return false
	}
	t.kinds[path] = k
	if k == kindDir {
		t.dirs = append(t.dirs, path)
	}
	for p := filepath.Dir(path); p != "/"; p = filepath.Dir(p) {
		switch t.kinds[p] {
		case kindDir:
			return true
		case 0:
			t.kinds[p] = kindDir
			t.dirs = append(t.dirs, p)
		default:
			t.fail(fmt.Errorf("%s: parent %s is not a directory", path, p))
			return false
		}
	}
	return true
}

func (t *tree) fail(err error) { t.errs = append(t.errs, err) }

// write creates the tree under root, an existing directory. Directories go
// first, a level at a time so parents exist before their children; files
// and links then go all at once, since nothing depends on their order.
// Each step runs on all CPUs: a build is almost all system calls.
func (t *tree) write(root string) error {
	if len(t.errs) > 0 {
		return errors.Join(t.errs...)
	}
	var levels [][]string
	for _, d := range t.dirs {
		depth := strings.Count(d, "/")
		for len(levels) < depth {
			levels = append(levels, nil)
		}
		levels[depth-1] = append(levels[depth-1], d)
	}
	for _, level := range levels {
		err := parallel(len(level), func(i int) error { return os.Mkdir(root+level[i], 0o755) })
		if err != nil {
			return err
		}
	}
	return parallel(len(t.entries), func(i int) error { return t.entries[i].create(root) })
}

// parallel runs f(0..n-1) on GOMAXPROCS goroutines and joins the errors in
// index order.
func parallel(n int, f func(i int) error) error {
	workers := min(runtime.GOMAXPROCS(0), n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				errs[i] = f(i)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// create writes one entry with plain system calls: os.WriteFile would also
// try to register every file with the network poller, one more system call
// per file, and system calls are most of the cost of a build.
func (e entry) create(root string) error {
	path := root + e.path
	if e.target != "" {
		return os.Symlink(e.target, path)
	}
	fd, err := syscall.Open(path, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		return &os.PathError{Op: "create", Path: path, Err: err}
	}
	data := []byte(e.data)
	for len(data) > 0 && err == nil {
		var n int
		n, err = syscall.Write(fd, data)
		data = data[n:]
	}
	if cerr := syscall.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		return &os.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}
