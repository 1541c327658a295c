package hostfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func tree(t *testing.T) FS {
	t.Helper()
	root := t.TempDir()
	mk := func(p, content string) {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, p string) {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, full); err != nil {
			t.Fatal(err)
		}
	}
	mk("sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/numa_node", "1\n")
	mk("sys/bad", "\xff\xfe")
	mk("sys/nul", "a\x00b")
	mk("sys/notint", "12x")
	link("../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0", "sys/bus/pci/devices/0000:01:00.0")
	link("/sys/devices/pci0000:00", "sys/abs")
	link("loop2", "sys/loop1")
	link("loop1", "sys/loop2")
	f, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestReadsAndLinks(t *testing.T) {
	f := tree(t)
	if n, err := f.ReadInt("/sys/bus/pci/devices/0000:01:00.0/numa_node"); err != nil || n != 1 {
		t.Fatalf("ReadInt through a link = %d, %v", n, err)
	}
	got, err := f.Resolve("/sys/bus/pci/devices/0000:01:00.0")
	if err != nil || got != "/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0" {
		t.Fatalf("Resolve = %q, %v", got, err)
	}
	// An absolute target stays under the root.
	got, err = f.Resolve("/sys/abs/0000:00:01.0")
	if err != nil || got != "/sys/devices/pci0000:00/0000:00:01.0" {
		t.Fatalf("Resolve absolute = %q, %v", got, err)
	}
	if _, err := f.Resolve("/sys/loop1"); err == nil || !strings.Contains(err.Error(), "symbolic links") {
		t.Fatalf("Resolve loop: %v", err)
	}
	if b, err := f.LinkBase("/sys/bus/pci/devices/0000:01:00.0"); err != nil || b != "0000:01:00.0" {
		t.Fatalf("LinkBase = %q, %v", b, err)
	}
}

func TestGarbage(t *testing.T) {
	f := tree(t)
	for _, p := range []string{"/sys/bad", "/sys/nul"} {
		if _, err := f.ReadString(p); err == nil {
			t.Errorf("ReadString(%s): want an error", p)
		}
	}
	if _, err := f.ReadInt("/sys/notint"); err == nil {
		t.Error("ReadInt of garbage: want an error")
	}
	if _, err := f.ReadString("/sys/missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
	huge := f.Path("/sys/huge")
	if err := os.WriteFile(huge, make([]byte, MaxFileSize+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadFile("/sys/huge"); !errors.Is(err, ErrTooLarge) {
		t.Errorf("huge file: %v, want ErrTooLarge", err)
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := New(""); err == nil {
		t.Error("empty root accepted")
	}
	if _, err := New("/nonexistent/root"); err == nil {
		t.Error("missing root accepted")
	}
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, nil, 0o644)
	if _, err := New(file); err == nil {
		t.Error("file as root accepted")
	}
}
