// Package hostfs is the host's filesystem as the agent sees it: "/" on a host,
// "/host" in the DaemonSet, a temporary tree in tests and simulated nodes.
//
// Every reader of /sys, /proc and /dev takes an FS value instead of a global
// path, so tests point it at fixture trees and run in parallel.
package hostfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxFileSize bounds every read. sysfs attributes report a size of 4096
// whatever they hold, and procfs files report 0, so sizes from stat are
// useless; a limit keeps a broken or hostile file from eating memory.
const MaxFileSize = 8 << 20

// maxLinkHops matches the kernel's limit on nested symlinks (MAXSYMLINKS).
const maxLinkHops = 40

// ErrTooLarge is returned for files over MaxFileSize.
var ErrTooLarge = errors.New("file too large")

// FS is a host filesystem rooted at a directory. The zero value is not
// usable; call New.
type FS struct {
	root string
}

// New returns an FS rooted at root, which must be an existing directory.
func New(root string) (FS, error) {
	if root == "" {
		return FS{}, errors.New("host root is empty")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return FS{}, fmt.Errorf("host root %q: %w", root, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return FS{}, fmt.Errorf("host root: %w", err)
	}
	if !st.IsDir() {
		return FS{}, fmt.Errorf("host root %s is not a directory", abs)
	}
	return FS{root: filepath.Clean(abs)}, nil
}

// Root is the directory the host's "/" is found at.
func (f FS) Root() string { return f.root }

// Path maps a host path (e.g. "/sys/class/net") to the real path under the root.
func (f FS) Path(hostPath string) string {
	return filepath.Join(f.root, filepath.Clean("/"+hostPath))
}

// ReadFile reads a whole file, up to MaxFileSize.
func (f FS) ReadFile(hostPath string) ([]byte, error) {
	file, err := os.Open(f.Path(hostPath))
	if err != nil {
		return nil, err
	}
	defer file.Close()
	b, err := io.ReadAll(io.LimitReader(file, MaxFileSize+1))
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: hostPath, Err: err}
	}
	if len(b) > MaxFileSize {
		return nil, &fs.PathError{Op: "read", Path: hostPath, Err: ErrTooLarge}
	}
	return b, nil
}

// Open opens a file for streaming, for the few procfs files that can
// legitimately exceed MaxFileSize (/proc/interrupts on a large machine).
// The caller bounds what it reads.
func (f FS) Open(hostPath string) (*os.File, error) {
	return os.Open(f.Path(hostPath))
}

// ReadString reads a small text attribute (a sysfs file, a procfs value) and
// trims surrounding white space. Content that is not UTF-8 text, or that
// holds NUL bytes, is an error: no attribute we read legitimately holds either.
func (f FS) ReadString(hostPath string) (string, error) {
	b, err := f.ReadFile(hostPath)
	if err != nil {
		return "", err
	}
	return Text(hostPath, b)
}

// Text validates b as the text content of hostPath and trims it.
func Text(hostPath string, b []byte) (string, error) {
	if !utf8.Valid(b) {
		return "", &fs.PathError{Op: "read", Path: hostPath, Err: errors.New("content is not UTF-8 text")}
	}
	if strings.IndexByte(string(b), 0) >= 0 {
		return "", &fs.PathError{Op: "read", Path: hostPath, Err: errors.New("content holds NUL bytes")}
	}
	return strings.TrimSpace(string(b)), nil
}

// ReadInt reads a decimal integer attribute.
func (f FS) ReadInt(hostPath string) (int64, error) {
	s, err := f.ReadString(hostPath)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", hostPath, err)
	}
	return n, nil
}

// ReadDir lists a directory, sorted by name.
func (f FS) ReadDir(hostPath string) ([]fs.DirEntry, error) {
	return os.ReadDir(f.Path(hostPath))
}

// Names lists the entry names of a directory, sorted.
func (f FS) Names(hostPath string) ([]string, error) {
	entries, err := f.ReadDir(hostPath)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names, nil
}

// Exists reports whether hostPath exists (following symlinks).
func (f FS) Exists(hostPath string) bool {
	_, err := os.Stat(f.Path(hostPath))
	return err == nil
}

// IsDir reports whether hostPath is a directory (following symlinks).
func (f FS) IsDir(hostPath string) bool {
	st, err := os.Stat(f.Path(hostPath))
	return err == nil && st.IsDir()
}

// Readlink returns the target of the symlink at hostPath as written.
func (f FS) Readlink(hostPath string) (string, error) {
	return os.Readlink(f.Path(hostPath))
}

// LinkBase returns the last element of a symlink's target, the usual way
// sysfs names things (".../drivers/mlx5_core" -> "mlx5_core").
func (f FS) LinkBase(hostPath string) (string, error) {
	t, err := f.Readlink(hostPath)
	if err != nil {
		return "", err
	}
	return filepath.Base(t), nil
}

// Resolve follows every symlink in hostPath and returns the host path it
// ends at. Absolute link targets are taken as host paths (re-rooted under
// the FS root), so a link never escapes the root: with root /host, a link to
// /sys/devices/x resolves to /host/sys/devices/x, not the container's /sys.
func (f FS) Resolve(hostPath string) (string, error) {
	parts := strings.Split(strings.Trim(filepath.Clean("/"+hostPath), "/"), "/")
	resolved := "/"
	hops := 0
	for len(parts) > 0 {
		p := parts[0]
		parts = parts[1:]
		switch p {
		case "", ".":
			continue
		case "..":
			resolved = filepath.Dir(resolved)
			continue
		}
		next := filepath.Join(resolved, p)
		st, err := os.Lstat(f.Path(next))
		if err != nil {
			return "", err
		}
		if st.Mode()&fs.ModeSymlink == 0 {
			resolved = next
			continue
		}
		hops++
		if hops > maxLinkHops {
			return "", &fs.PathError{Op: "resolve", Path: hostPath, Err: errors.New("too many levels of symbolic links")}
		}
		target, err := os.Readlink(f.Path(next))
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(target) {
			resolved = "/"
		}
		parts = append(strings.Split(target, "/"), parts...)
	}
	return resolved, nil
}
