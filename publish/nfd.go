package publish

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gpunode/gpunode/labels"
)

// The feature file follows Node Feature Discovery's local source
// (customization guide, "Local feature source"; source/local/local.go):
// one "key=value" line per label, '#' comment lines, an optional
// "# +expiry-time=<RFC3339>" directive after which NFD ignores the labels
// that follow, and dot files are skipped, so the temporary file we rename
// into place is never read half-written.
const (
	nfdHeader = "# Written by gpunode-agent, replaced on every change. Do not edit.\n"
	nfdExpiry = "# +expiry-time="
)

// NFDFile renders labels for NFD's local source. A non-zero expiry makes
// NFD drop the labels after it, so they do not outlive an uninstalled agent.
func NFDFile(l labels.Set, expiry time.Time) []byte {
	var b bytes.Buffer
	b.WriteString(nfdHeader)
	if !expiry.IsZero() {
		b.WriteString(nfdExpiry + expiry.UTC().Format(time.RFC3339) + "\n")
	}
	for _, line := range l.Lines() {
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// WriteNFDFile writes the labels to path for NFD, atomically (a temporary
// dot file in the same directory, renamed over the old one). With a ttl,
// the file expires ttl after writing and is rewritten when less than half
// of it is left; otherwise, and without a ttl, a file that already holds
// these labels is left alone. It reports whether it wrote.
func WriteNFDFile(path string, l labels.Set, ttl time.Duration, now time.Time) (bool, error) {
	if have, err := os.ReadFile(path); err == nil {
		body, expiry := splitNFDFile(have)
		fresh := ttl == 0 && expiry.IsZero() || ttl > 0 && expiry.Sub(now) > ttl/2
		if fresh && bytes.Equal(body, NFDFile(l, time.Time{})) {
			return false, nil
		}
	}
	var expiry time.Time
	if ttl > 0 {
		expiry = now.Add(ttl).Truncate(time.Second)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return false, fmt.Errorf("NFD feature file: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	if _, err := tmp.Write(NFDFile(l, expiry)); err != nil {
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

// splitNFDFile returns a feature file without its expiry directive, and
// the expiry (zero when absent or unreadable).
func splitNFDFile(b []byte) ([]byte, time.Time) {
	var body bytes.Buffer
	var expiry time.Time
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, nfdExpiry); ok {
			expiry, _ = time.Parse(time.RFC3339, strings.TrimSpace(v))
			continue
		}
		body.WriteString(line + "\n")
	}
	return body.Bytes(), expiry
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
