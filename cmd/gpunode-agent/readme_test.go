package main

import (
	"bytes"
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite README.md's CLI section from the help")

// Markers around the generated CLI help in README.md.
const (
	helpBegin = "<!-- BEGIN CLI help: generated from gpunode-agent's help (go test ./cmd/gpunode-agent -run TestREADMEHelp -update); do not edit -->"
	helpEnd   = "<!-- END CLI help -->"
)

// README.md's CLI section is the binary's help: `--help` and `help` of
// every command (a command's help lists its subcommands with their
// flags), at 100 columns. It fails when they differ; -update rewrites it.
func TestREADMEHelp(t *testing.T) {
	t.Setenv("COLUMNS", "100")
	var c cli
	app, _ := c.newApp(&bytes.Buffer{}, &bytes.Buffer{})
	pages := [][]string{{"--help"}}
	for _, cmd := range app.Model().Commands {
		if !cmd.Hidden && cmd.Name != "help" {
			pages = append(pages, []string{"help", cmd.Name})
		}
	}
	var b strings.Builder
	b.WriteString("```\n")
	for i, args := range pages {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut.String())
		}
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString("$ gpunode-agent " + strings.Join(args, " ") + "\n")
		b.WriteString(tidy(out.String()))
	}
	b.WriteString("```\n")

	const path = "../../README.md"
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i, j := bytes.Index(doc, []byte(helpBegin)), bytes.Index(doc, []byte(helpEnd))
	if i < 0 || j < i {
		t.Fatalf("README.md lacks the markers %q ... %q", helpBegin, helpEnd)
	}
	want := string(doc[:i+len(helpBegin)]) + "\n" + b.String() + string(doc[j:])
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if want != string(doc) {
		t.Errorf("README.md's CLI section differs from the help; run go test ./cmd/gpunode-agent -run TestREADMEHelp -update and review the diff")
	}
}

var blankLines = regexp.MustCompile(`\n{3,}`)

// tidy drops trailing spaces and runs of blank lines from help text.
func tidy(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Trim(blankLines.ReplaceAllString(strings.Join(lines, "\n"), "\n\n"), "\n") + "\n"
}
