package chart

import (
	"encoding/json"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/gpunode/gpunode/config"
)

// configKeys lists the key paths of a YAML document ("probe.interval");
// lists and scalars end a path.
func configKeys(prefix string, v any, out *[]string) {
	m, ok := v.(map[string]any)
	if !ok {
		return
	}
	for k, child := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		*out = append(*out, p)
		configKeys(p, child, out)
	}
}

// schemaAllows says whether the schema admits the key path under s: every
// step is a declared property, or the object there is open.
func schemaAllows(s map[string]any, path []string) bool {
	for _, k := range path {
		props, _ := s["properties"].(map[string]any)
		child, ok := props[k].(map[string]any)
		if !ok {
			return s["additionalProperties"] != false && props == nil
		}
		s = child
	}
	return true
}

// The chart's `config` is the agent's config file, and its schema is
// closed: every key the agent reads (its whole default config, marshalled)
// must be accepted there, or a documented setting cannot be given through
// the chart (config.gpu.amd was refused).
func TestSchemaKnowsEveryAgentKey(t *testing.T) {
	var schema map[string]any
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(chartDir, "values.schema.json"))), &schema); err != nil {
		t.Fatal(err)
	}
	cfgSchema := schema["properties"].(map[string]any)["config"].(map[string]any)
	b, err := yaml.Marshal(config.Default())
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var keys []string
	configKeys("", doc, &keys)
	sort.Strings(keys)
	var refused []string
	for _, k := range keys {
		if !schemaAllows(cfgSchema, strings.Split(k, ".")) {
			refused = append(refused, "config."+k)
		}
	}
	if len(refused) > 0 {
		t.Errorf("the chart's schema refuses %d keys of the agent's config: %s", len(refused), strings.Join(refused, ", "))
	}
	if len(keys) < 50 {
		t.Errorf("only %d keys in the agent's default config: %s", len(keys), keys)
	}
}
