package tuning

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Compose merges profiles into one, so that concerns stay in profiles of
// their own (llm-inference for the host, roce-lossless for the fabric).
// Every setting of every part is kept. A setting two parts both give is
// fine when they agree and a conflict otherwise: composition never lets
// one part override another silently, so the order of the parts does not
// matter. A list (irq.policies, roce.pfc) is one setting: two parts must
// give the same list or only one of them may give it. Every conflict is
// reported, by key and the parts' values. The result is named by the
// parts' names joined with '.' (a valid label value: "llm-inference.
// roce-lossless"); descriptions are joined with "; ".
//
// The merge works on the profiles' YAML, section by section, so a
// section added to Profile composes without code here.
func Compose(parts ...Profile) (Profile, error) {
	switch len(parts) {
	case 0:
		return Profile{}, errors.New("compose: no profile")
	case 1:
		return parts[0], nil
	}
	merged := map[string]any{}
	owner := map[string]string{}
	var names, descs []string
	var errs []error
	for _, p := range parts {
		if slices.Contains(names, p.Name) {
			errs = append(errs, fmt.Errorf("profile %s given twice", p.Name))
			continue
		}
		names = append(names, p.Name)
		if p.Description != "" {
			descs = append(descs, p.Description)
		}
		m, err := profileMap(p)
		if err != nil {
			return Profile{}, fmt.Errorf("compose %s: %w", p.Name, err)
		}
		delete(m, "name")
		delete(m, "description")
		errs = append(errs, mergeMaps(merged, m, "", p.Name, owner)...)
	}
	name := strings.Join(names, ".")
	if len(name) > 63 {
		errs = append(errs, fmt.Errorf("composed name %q is longer than 63 characters (it becomes a label value)", name))
	}
	if len(errs) > 0 {
		slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
		return Profile{}, fmt.Errorf("compose %s: %w", strings.Join(names, ", "), errors.Join(errs...))
	}
	b, err := yaml.Marshal(merged)
	if err != nil {
		return Profile{}, fmt.Errorf("compose: %w", err)
	}
	var out Profile
	if err := yaml.Unmarshal(b, &out); err != nil {
		return Profile{}, fmt.Errorf("compose: %w", err)
	}
	// Validated under a placeholder name: the parts' names are valid, and
	// the joined one ('.') is a label value but not a profile file's name.
	out.Name = "composed"
	if err := out.Validate(); err != nil {
		return Profile{}, fmt.Errorf("compose %s: %w", strings.Join(names, ", "), err)
	}
	out.Name, out.Description = name, strings.Join(descs, "; ")
	return out, nil
}

// profileMap is a profile's YAML as nested maps.
func profileMap(p Profile) (map[string]any, error) {
	b, err := yaml.Marshal(p)
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// mergeMaps merges src (of profile name) into dst; owner remembers which
// profile gave each key.
func mergeMaps(dst, src map[string]any, prefix, name string, owner map[string]string) []error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(src)) {
		key := k
		if prefix != "" {
			key = prefix + "." + k
		}
		v := src[k]
		have, ok := dst[k]
		if !ok {
			dst[k] = v
			owner[key] = name
			continue
		}
		hm, hIsMap := have.(map[string]any)
		vm, vIsMap := v.(map[string]any)
		if hIsMap && vIsMap {
			errs = append(errs, mergeMaps(hm, vm, key, name, owner)...)
			continue
		}
		if !reflect.DeepEqual(have, v) {
			errs = append(errs, fmt.Errorf("%s: %s wants %s, %s wants %s", key, ownerOf(owner, key), yamlText(have), name, yamlText(v)))
		}
	}
	return errs
}

// ownerOf is the profile that gave key or the section it is in.
func ownerOf(owner map[string]string, key string) string {
	for {
		if o, ok := owner[key]; ok {
			return o
		}
		i := strings.LastIndexByte(key, '.')
		if i < 0 {
			return "?"
		}
		key = key[:i]
	}
}

// yamlText prints a value on one line in YAML's flow style, as a
// profile would give it.
func yamlText(v any) string {
	n := &yaml.Node{}
	if err := n.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	flow(n)
	b, err := yaml.Marshal(n)
	if err != nil {
		return fmt.Sprint(v)
	}
	return strings.TrimSpace(string(b))
}

func flow(n *yaml.Node) {
	n.Style |= yaml.FlowStyle
	for _, c := range n.Content {
		flow(c)
	}
}

// LoadProfiles resolves several profile references (LoadProfile each)
// and composes them.
func LoadProfiles(refs ...string) (Profile, error) {
	var parts []Profile
	for _, ref := range refs {
		p, err := LoadProfile(ref)
		if err != nil {
			return Profile{}, err
		}
		parts = append(parts, p)
	}
	return Compose(parts...)
}
