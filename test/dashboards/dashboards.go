// Package dashboards reads the chart's Grafana dashboards
// (charts/gpunode-agent/dashboards/*.json) for tests: their panels'
// queries and their template variables, and substitutes the variables as
// Grafana does before a query reaches Prometheus.
package dashboards

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Dashboard is the part of Grafana's dashboard JSON model the tests check.
type Dashboard struct {
	File       string
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []Variable `json:"list"`
	} `json:"templating"`
	Panels []Panel `json:"panels"`
}

// Variable is a template variable.
type Variable struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Definition string `json:"definition"`
	Query      any    `json:"query"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	IncludeAll bool `json:"includeAll"`
	Multi      bool `json:"multi"`
}

// Panel is a panel, or a row (Type "row").
type Panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	GridPos struct{ X, Y, W, H int } `json:"gridPos"`
}

// Load reads every dashboard in dir, strictly: the file must be one JSON
// object.
func Load(dir string) ([]Dashboard, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no dashboards in %s", dir)
	}
	sort.Strings(files)
	var out []Dashboard
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if !json.Valid(b) {
			return nil, fmt.Errorf("%s: not valid JSON", f)
		}
		var d Dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		d.File = filepath.Base(f)
		out = append(out, d)
	}
	return out, nil
}

var labelValuesRE = regexp.MustCompile(`^label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\)$`)

// LabelValues splits a query variable's label_values(selector, label).
func (v Variable) LabelValues() (selector, label string, err error) {
	m := labelValuesRE.FindStringSubmatch(strings.TrimSpace(v.Definition))
	if m == nil {
		return "", "", fmt.Errorf("variable %s: %q is not label_values(selector, label)", v.Name, v.Definition)
	}
	return strings.TrimSpace(m[1]), m[2], nil
}

// Grafana's built-in interval variables, as the tests set them.
var builtins = map[string]string{"__rate_interval": "1m", "__range": "1h", "__interval": "30s"}

var varRE = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)

// Substitute replaces $name and ${name} in expr with values[name] (a
// regular expression for a multi-value variable, as Grafana writes
// (a|b) for =~) and Grafana's interval variables. It fails on a variable
// it has no value for.
func Substitute(expr string, values map[string]string) (string, error) {
	var missing []string
	out := varRE.ReplaceAllStringFunc(expr, func(m string) string {
		name := varRE.FindStringSubmatch(m)[1]
		if v, ok := values[name]; ok {
			return v
		}
		if v, ok := builtins[name]; ok {
			return v
		}
		missing = append(missing, name)
		return m
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("undefined variables %v in %s", missing, expr)
	}
	return out, nil
}

// Regex is how Grafana substitutes a multi-value variable into =~: each
// value regex-quoted, the backslashes doubled for PromQL's string
// (Grafana's Prometheus data source escapes n.1 as n\\.1), so values with
// dots or slashes, like vLLM model names, stay valid PromQL.
func Regex(values []string) string {
	quoted := make([]string, len(values))
	for i, v := range values {
		quoted[i] = strings.ReplaceAll(regexp.QuoteMeta(v), `\`, `\\`)
	}
	return "(" + strings.Join(quoted, "|") + ")"
}
