package testsupport

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"testing"
)

// Hang replaces the file at path with a FIFO that nobody writes: a read of
// it blocks in open(2) the way a read of a hung sysfs attribute blocks in
// its driver, deaf to every context. release puts a regular file holding
// content in its place and lets the reads blocked on the FIFO go (one of
// them gets content, the others an empty file). The test's cleanup
// releases, with no content, what it did not.
func Hang(t testing.TB, path string) (release func(content string)) {
	t.Helper()
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func(content string) {
		once.Do(func() {
			// A writer that opens without blocking finds the readers
			// blocked in open (ENXIO: there are none); the file goes in
			// place before it writes, so no read starts on the FIFO after.
			w, werr := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0)
			tmp := path + ".released"
			if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
				t.Error(err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Error(err)
			}
			if werr == nil {
				if _, err := w.WriteString(content); err != nil {
					t.Error(err)
				}
				w.Close()
			} else if !errors.Is(werr, syscall.ENXIO) {
				t.Error(werr)
			}
		})
	}
	t.Cleanup(func() { release("") })
	return release
}
