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
	// the default of the binary and the chart's), revert (restore every
	// original the journal holds, then only report; for uninstall and
	// rollback) or off.
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
	// ReadinessTaint orders tuning before workloads on a new node.
	ReadinessTaint ReadinessTaint `yaml:"readinessTaint"`
}

// ReadinessTaint is an opt-in taint that the node's provisioning puts on
// a new Node (kubelet --register-with-taints, a node pool's or Karpenter's
// startup taints) and the agent removes once tuning is applied and
// verified in enforce mode. It exists because some settings reach only
// what starts after them: tcp_rmem, tcp_wmem and tcp_congestion_control
// are per network namespace and copied into a pod's namespace when it is
// created, so a pod scheduled before tuning keeps the old values. The
// agent never adds the taint; until it lifts it, it says why in an event.
type ReadinessTaint struct {
	Enabled bool `yaml:"enabled"`
	// Key of the taint; every taint with it is removed, whatever its
	// value and effect.
	Key string `yaml:"key"`
}

// DefaultReadinessTaintKey is the readiness taint's default key.
const DefaultReadinessTaintKey = "gpunode.dev/tuning"

// DefaultTuning audits the default profile: a bare `gpunode-agent run`
// changes nothing on the host.
func DefaultTuning() Tuning {
	return Tuning{
		Mode:           tuning.ModeAudit,
		Profile:        tuning.DefaultProfile,
		Interval:       time.Minute,
		StateDir:       tuning.DefaultStateDir,
		ReadinessTaint: ReadinessTaint{Key: DefaultReadinessTaintKey},
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
	case tuning.ModeEnforce, tuning.ModeAudit, tuning.ModeRevert, tuning.ModeOff:
	default:
		bad("tuning.mode", "must be enforce, audit, revert or off, got %q", t.Mode)
	}
	if t.Interval < time.Second {
		bad("tuning.interval", "must be at least 1s, got %s", t.Interval)
	}
	if k := t.ReadinessTaint.Key; len(k) > 317 || !taintKey.MatchString(k) {
		bad("tuning.readinessTaint.key", "must be a label key such as %s, got %q", DefaultReadinessTaintKey, k)
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
	// Revert needs no profile: it restores what the journal holds.
	if t.Mode != tuning.ModeOff && t.Mode != tuning.ModeRevert {
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
