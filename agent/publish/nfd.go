package publish

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/gpunode/gpunode/agent/labels"
)

// nfdHeader starts the feature file. NFD's local source reads one
// "key=value" per line and skips lines starting with '#'.
const nfdHeader = "# Written by gpunode-agent; every run replaces this file. Do not edit.\n"

// NFDFile renders labels in the format of NFD's local source (features.d).
func NFDFile(l labels.Set) []byte {
	var b bytes.Buffer
	b.WriteString(nfdHeader)
	for _, line := range l.Lines() {
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// WriteNFDFile writes the labels to path for Node Feature Discovery,
// atomically (a temporary file in the same directory, renamed over the
// old one), so NFD never reads half a file. It does nothing when the file
// already holds these labels, and reports whether it wrote.
func WriteNFDFile(path string, l labels.Set) (bool, error) {
	want := NFDFile(l)
	if have, err := os.ReadFile(path); err == nil && bytes.Equal(have, want) {
		return false, nil
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return false, fmt.Errorf("NFD feature file: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	if _, err := tmp.Write(want); err != nil {
		tmp.Close()
		return false, fmt.Errorf("NFD feature file: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, fmt.Errorf("NFD feature file: sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("NFD feature file: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return false, fmt.Errorf("NFD feature file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return false, fmt.Errorf("NFD feature file: %w", err)
	}
	return true, nil
}

// RemoveNFDFile deletes the feature file if it is ours (starts with our
// header); a missing file is fine, a foreign one is left alone.
func RemoveNFDFile(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("NFD feature file: %w", err)
	}
	if !strings.HasPrefix(string(b), nfdHeader) {
		return fmt.Errorf("NFD feature file %s was not written by gpunode-agent; left alone", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("NFD feature file: %w", err)
	}
	return nil
}
