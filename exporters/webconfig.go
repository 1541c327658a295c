package exporters

import (
	"fmt"
	"strings"

	"github.com/prometheus/exporter-toolkit/web"
)

// ValidateWebConfig checks an exporter-toolkit web configuration file as
// exporter-toolkit does before it serves (Listen checks the same): the
// file exists and decodes strictly (an unknown key is an error), every
// basic-auth password is a bcrypt hash, and the TLS settings load with
// their certificate and key. An empty path is no web configuration:
// plain HTTP without authentication.
func ValidateWebConfig(path string) error {
	if path == "" {
		return nil
	}
	if err := web.Validate(path); err != nil {
		if strings.Contains(err.Error(), "bcrypt") {
			return fmt.Errorf("web config %s: %w (basic_auth_users takes bcrypt hashes, not passwords: htpasswd -nBC 10 USER prints one)", path, err)
		}
		return fmt.Errorf("web config %s: %w", path, err)
	}
	return nil
}
