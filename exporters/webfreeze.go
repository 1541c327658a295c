package exporters

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"
)

// exporter-toolkit re-reads the web config file on every request (basic
// auth) and every TLS handshake, so editing it changed the running agent
// silently: basic auth could vanish, or a typo break TLS, without a log
// line (issue 14, item 7). The agent reads it once instead, at start: the
// toolkit is given a sealed in-memory copy, with relative certificate
// paths made absolute. The certificate files themselves are still re-read
// on each handshake, so rotated certificates take effect as before.

// tlsFileKeys are the keys of tls_server_config that name files, resolved
// by exporter-toolkit against the web config's directory.
var tlsFileKeys = map[string]bool{"cert_file": true, "key_file": true, "client_ca_file": true}

// frozenWebConfig is a sealed copy of a web config file.
type frozenWebConfig struct {
	f *os.File
}

// Path is where the copy can be read: the memfd through /proc/self/fd.
func (c *frozenWebConfig) Path() string { return fmt.Sprintf("/proc/self/fd/%d", c.f.Fd()) }

func (c *frozenWebConfig) Close() error { return c.f.Close() }

// freezeWebConfig reads path once and returns a sealed copy of it.
func freezeWebConfig(path string) (*frozenWebConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("web config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("web config %s: %w", path, err)
	}
	b, err = absoluteTLSPaths(b, filepath.Dir(abs))
	if err != nil {
		return nil, fmt.Errorf("web config %s: %w", path, err)
	}
	fd, err := unix.MemfdCreate("gpunode-web-config", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("web config: memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "gpunode-web-config")
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, fmt.Errorf("web config: write the copy: %w", err)
	}
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		f.Close()
		return nil, fmt.Errorf("web config: seal the copy: %w", err)
	}
	return &frozenWebConfig{f: f}, nil
}

// absoluteTLSPaths rewrites the relative file names under
// tls_server_config to absolute ones under dir, leaving the rest as it is.
func absoluteTLSPaths(b []byte, dir string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	if len(doc.Content) == 0 {
		return b, nil // empty: exporter-toolkit's defaults
	}
	changed := false
	if tls := mapValue(doc.Content[0], "tls_server_config"); tls != nil && tls.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(tls.Content); i += 2 {
			k, v := tls.Content[i], tls.Content[i+1]
			if tlsFileKeys[k.Value] && v.Kind == yaml.ScalarNode && v.Value != "" && !filepath.IsAbs(v.Value) {
				v.Value, changed = filepath.Join(dir, v.Value), true
			}
		}
	}
	if !changed {
		return b, nil
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	return out.Bytes(), enc.Close()
}

// mapValue is the value of key in a YAML mapping node, or nil.
func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}
