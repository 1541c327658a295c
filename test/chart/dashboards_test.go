package chart

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	grafana "github.com/gpunode/gpunode/test/dashboards"
)

// Every dashboard is valid JSON with unique panel ids, queries on the
// data source variable and variables it defines, and every query (with
// the variables substituted) and every variable's selector parses as
// PromQL: promtool check rules parses them as recording rules.
func TestDashboardsParse(t *testing.T) {
	ds, err := grafana.Load(dashboardDir)
	if err != nil {
		t.Fatal(err)
	}
	var rules []map[string]string
	record := func(expr string) {
		rules = append(rules, map[string]string{"record": fmt.Sprintf("dashboard:query%d", len(rules)), "expr": expr})
	}
	uids := map[string]bool{}
	for _, d := range ds {
		if d.UID == "" || uids[d.UID] || d.Title == "" {
			t.Errorf("%s: uid %q, title %q", d.File, d.UID, d.Title)
		}
		uids[d.UID] = true
		values := map[string]string{}
		for _, v := range d.Templating.List {
			values[v.Name] = ".+"
		}
		for _, v := range d.Templating.List {
			if v.Type == "datasource" {
				continue
			}
			if v.Datasource == nil || v.Datasource.UID != "${datasource}" || !v.Multi || !v.IncludeAll {
				t.Errorf("%s: variable %s: data source %v, multi %v, all %v", d.File, v.Name, v.Datasource, v.Multi, v.IncludeAll)
			}
			sel, _, err := v.LabelValues()
			if err != nil {
				t.Error(err)
				continue
			}
			s, err := grafana.Substitute(sel, values)
			if err != nil {
				t.Errorf("%s: %v", d.File, err)
				continue
			}
			record(s)
		}
		if _, ok := values["node"]; !ok {
			t.Errorf("%s: no node variable", d.File)
		}
		ids := map[int]bool{}
		queries := 0
		for _, p := range d.Panels {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d twice", d.File, p.ID)
			}
			ids[p.ID] = true
			if p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("%s: panel %q at %+v", d.File, p.Title, p.GridPos)
			}
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
				t.Errorf("%s: panel %q: data source %v, %d queries", d.File, p.Title, p.Datasource, len(p.Targets))
			}
			for _, tg := range p.Targets {
				queries++
				s, err := grafana.Substitute(tg.Expr, values)
				if err != nil {
					t.Errorf("%s: panel %q: %v", d.File, p.Title, err)
					continue
				}
				record(s)
			}
		}
		t.Logf("%s: %d panels, %d queries", d.File, len(d.Panels), queries)
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboards", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := writeFile(filepath.Join(dir, "queries.yaml"), b); err != nil {
		t.Fatal(err)
	}
	if out, err := promtool(t, dir, "check", "rules", "queries.yaml"); err != nil {
		t.Fatalf("promtool check rules on the dashboards' queries: %v\n%s", err, out)
	}
}

// The chart's dashboard ConfigMaps carry the files unchanged, labelled
// for the Grafana sidecar.
func TestDashboardConfigMaps(t *testing.T) {
	objs := renderObjects(t, "--set", "dashboards.enabled=true", "--set", "dashboards.label=grafana_dash",
		"--set", "dashboards.namespace=monitoring")
	ds, err := grafana.Load(dashboardDir)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, o := range objs {
		md := o["metadata"].(map[string]any)
		labels, _ := md["labels"].(map[string]any)
		if o["kind"] != "ConfigMap" || labels["grafana_dash"] != "1" {
			continue
		}
		found++
		if md["namespace"] != "monitoring" {
			t.Errorf("%s in namespace %v", md["name"], md["namespace"])
		}
		for file, content := range o["data"].(map[string]any) {
			want := readFile(t, filepath.Join(dashboardDir, file))
			if content != strings.TrimSuffix(want, "\n") {
				t.Errorf("%s: %s differs from the file", md["name"], file)
			}
		}
	}
	if found != len(ds) {
		t.Errorf("%d dashboard ConfigMaps, %d dashboards", found, len(ds))
	}
	if findObject(renderObjects(t), "ConfigMap") == nil {
		t.Fatal("no config ConfigMap by default")
	}
}
