package sim

import (
	"fmt"
	"os"
	"testing"
)

// BenchmarkBuild is the cost of --simulate at start-up: generate a node and
// write it. Most of it is system calls, so it depends on the file system
// under TMPDIR (tmpfs is several times faster than a disk).
func BenchmarkBuild(b *testing.B) {
	for _, name := range Names() {
		b.Run(name, func(b *testing.B) {
			parent := b.TempDir()
			i := 0
			for b.Loop() {
				dir := fmt.Sprintf("%s/%d", parent, i)
				i++
				if err := os.Mkdir(dir, 0o755); err != nil {
					b.Fatal(err)
				}
				if _, err := Build(name, dir); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGenerate is the in-memory part of a build: describing the node
// and formatting every file, without writing anything.
func BenchmarkGenerate(b *testing.B) {
	for _, s := range catalog() {
		b.Run(s.name, func(b *testing.B) {
			for b.Loop() {
				bd := newBuilder(s.name)
				s.describe(bd)
				if err := bd.finish(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
