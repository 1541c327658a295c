package config

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/gpunode/gpunode/tuning"
)

// Tuning configures host tuning by the daemon.
type Tuning struct {
	// Mode: enforce (apply at start, repair drift), audit (report only,
	// the default of the binary) or off. The chart sets enforce.
	Mode string `yaml:"mode"`
	// Profile is a built-in profile name (llm-inference, llm-d-reference,
	// none) or the path of a profile file.
	Profile string `yaml:"profile"`
	// CustomProfile is a profile given inline; it replaces Profile.
	CustomProfile *tuning.Profile `yaml:"customProfile"`
	// Profiles composes several profiles (built-in names or files, see
	// tuning.Compose: settings merge, disagreements are refused); it
	// replaces Profile.
	Profiles []string `yaml:"profiles"`
	// Interval between verifications (and repairs in enforce mode).
	Interval time.Duration `yaml:"interval"`
	// StateDir holds the journal of original values; on the host, so that
	// it outlives the agent's container (a hostPath in the chart).
	StateDir string `yaml:"stateDir"`
}

// DefaultTuning audits the default profile: a bare `gpunode-agent run`
// changes nothing on the host.
func DefaultTuning() Tuning {
	return Tuning{
		Mode:     tuning.ModeAudit,
		Profile:  tuning.DefaultProfile,
		Interval: time.Minute,
		StateDir: tuning.DefaultStateDir,
	}
}

// ResolveProfile returns the configured profile: the inline one, or the
// built-in or file Profile names.
func (t Tuning) ResolveProfile() (tuning.Profile, error) {
	if t.CustomProfile != nil {
		p := *t.CustomProfile
		return p, p.Validate()
	}
	if len(t.Profiles) > 0 {
		return tuning.LoadProfiles(t.Profiles...)
	}
	return tuning.LoadProfile(t.Profile)
}

func (t Tuning) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	switch t.Mode {
	case tuning.ModeEnforce, tuning.ModeAudit, tuning.ModeOff:
	default:
		bad("tuning.mode", "must be enforce, audit or off, got %q", t.Mode)
	}
	if t.Interval < time.Second {
		bad("tuning.interval", "must be at least 1s, got %s", t.Interval)
	}
	if t.StateDir == "" || !filepath.IsAbs(t.StateDir) {
		bad("tuning.stateDir", "must be an absolute path, got %q", t.StateDir)
	}
	if t.CustomProfile != nil && t.Profile != "" && t.Profile != tuning.DefaultProfile && t.Profile != t.CustomProfile.Name {
		bad("tuning.profile", "%q and tuning.customProfile (%q) both given; keep one", t.Profile, t.CustomProfile.Name)
	}
	if len(t.Profiles) > 0 && (t.CustomProfile != nil || t.Profile != "" && t.Profile != tuning.DefaultProfile) {
		bad("tuning.profiles", "given with tuning.profile or tuning.customProfile; keep one")
	}
	if t.Mode != tuning.ModeOff {
		if _, err := t.ResolveProfile(); err != nil {
			key := "tuning.profile"
			if t.CustomProfile != nil {
				key = "tuning.customProfile"
			} else if len(t.Profiles) > 0 {
				key = "tuning.profiles"
			}
			bad(key, "%v", err)
		}
	}
	return errs
}
