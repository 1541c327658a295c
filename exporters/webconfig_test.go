package exporters

import (
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ValidateWebConfig refuses exactly what Listen refuses, so
// --config.check can say before a start what would stop it.
func TestValidateWebConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cert, key := selfSigned(t, dir)
	for _, tc := range []struct {
		name, path, want string
	}{
		{"none", "", ""},
		{"basic auth", write("ok.yml", "basic_auth_users:\n  prom: "+bcryptHash(t, "s3cret")+"\n"), ""},
		{"tls", write("tls.yml", "tls_server_config:\n  cert_file: "+cert+"\n  key_file: "+key+"\n"), ""},
		{"missing", filepath.Join(dir, "missing.yml"), "no such file"},
		{"unknown key", write("unknown.yml", "basic_auth_user:\n  prom: x\n"), "field basic_auth_user not found"},
		{"plaintext password", write("plain.yml", "basic_auth_users:\n  prom: s3cret\n"), "takes bcrypt hashes"},
		{"missing certificate", write("nocert.yml", "tls_server_config:\n  cert_file: "+filepath.Join(dir, "none.crt")+"\n  key_file: "+key+"\n"), "none.crt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateWebConfig(tc.path)
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("ValidateWebConfig: %v, want %q", err, tc.want)
			}
			// A bound listener is closed when the test process exits.
			_, lerr := Listen("127.0.0.1:0", tc.path, http.NotFoundHandler(), slog.New(slog.DiscardHandler))
			if (lerr == nil) != (err == nil) {
				t.Errorf("Listen: %v, but ValidateWebConfig: %v", lerr, err)
			}
		})
	}
}
