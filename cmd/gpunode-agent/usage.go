package main

import (
	"text/template"

	"github.com/alecthomas/kingpin/v2"
)

// usageTemplate is kingpin's DefaultUsageTemplate with two changes: a
// command's help lists its own flags and its parents' but not the global
// ones again (those are in `gpunode-agent --help`), and a command's
// subcommands are listed with their own flags, so `help tune` and `help
// probe` show every flag of their subcommands. README.md's CLI section is
// this help (TestREADMEHelp).
const usageTemplate = `{{define "FormatCommand" -}}
{{if .FlagSummary}} {{.FlagSummary}}{{end -}}
{{range .Args}}{{if not .Hidden}} {{if not .Required}}[{{end}}{{if .PlaceHolder}}{{.PlaceHolder}}{{else}}<{{.Name}}>{{end}}{{if .Value|IsCumulative}}...{{end}}{{if not .Required}}]{{end}}{{end}}{{end -}}
{{end -}}

{{define "FormatCommands" -}}
{{range .FlattenedCommands -}}
{{if not .Hidden -}}
  {{.FullCommand}}{{if .Default}}*{{end}}{{template "FormatCommand" .}}
{{.Help|Wrap 4}}
{{end -}}
{{end -}}
{{end -}}

{{define "FormatSubcommands" -}}
{{range .FlattenedCommands -}}
{{if not .Hidden -}}
  {{.FullCommand}}{{template "FormatCommand" .}}
{{.Help|Wrap 4}}{{with .Flags|VisibleFlags}}{{FormatTwoColumnsWithIndent (.|FlagsToTwoColumns) 6 2}}{{end}}
{{end -}}
{{end -}}
{{end -}}

{{define "FormatUsage" -}}
{{template "FormatCommand" .}}{{if .Commands}} <command> [<args> ...]{{end}}
{{if .Help}}
{{.Help|Wrap 0 -}}
{{end -}}

{{end -}}

{{if .Context.SelectedCommand -}}
usage: {{.App.Name}} {{.Context.SelectedCommand}}{{template "FormatUsage" .Context.SelectedCommand}}
{{ else -}}
usage: {{.App.Name}}{{template "FormatUsage" .App}}
{{end}}
{{if .Context.SelectedCommand -}}
{{with CommandFlags .Context.Flags .App.Flags -}}
Flags:
{{.|FlagsToTwoColumns|FormatTwoColumns}}
{{end -}}
Global flags: see {{.App.Name}} --help.
{{else if .Context.Flags -}}
Flags:
{{.Context.Flags|FlagsToTwoColumns|FormatTwoColumns}}
{{end -}}
{{if .Context.Args -}}
Args:
{{.Context.Args|ArgsToTwoColumns|FormatTwoColumns}}
{{end -}}
{{if .Context.SelectedCommand -}}
{{if len .Context.SelectedCommand.Commands}}
Subcommands:
{{template "FormatSubcommands" .Context.SelectedCommand}}
{{end -}}
{{else if .App.Commands -}}
Commands:
{{template "FormatCommands" .App}}
{{end -}}
`

// usageFuncs are the template functions usageTemplate adds to kingpin's.
var usageFuncs = template.FuncMap{
	// CommandFlags are the flags in context that are not the
	// application's (global) flags.
	"CommandFlags": func(context, global []*kingpin.FlagModel) []*kingpin.FlagModel {
		isGlobal := map[string]bool{}
		for _, f := range global {
			isGlobal[f.Name] = true
		}
		var out []*kingpin.FlagModel
		for _, f := range context {
			if !isGlobal[f.Name] && !f.Hidden {
				out = append(out, f)
			}
		}
		return out
	},
	"VisibleFlags": func(flags []*kingpin.FlagModel) []*kingpin.FlagModel {
		var out []*kingpin.FlagModel
		for _, f := range flags {
			if !f.Hidden {
				out = append(out, f)
			}
		}
		return out
	},
}
