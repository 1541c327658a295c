package tuning

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/gpunode/gpunode/internal/hostfs"
)

// UnitManager is the part of systemd tuning needs: a unit's state, stop
// and start. It is the seam to systemd's D-Bus API.
type UnitManager interface {
	// UnitState returns the unit's ActiveState, or UnitNotFound when no
	// such unit is installed.
	UnitState(ctx context.Context, unit string) (string, error)
	StopUnit(ctx context.Context, unit string) error
	StartUnit(ctx context.Context, unit string) error
	// MaskUnit masks the unit until reboot (a runtime mask, under
	// /run/systemd), so nothing starts it; UnmaskUnit removes that mask.
	MaskUnit(ctx context.Context, unit string) error
	UnmaskUnit(ctx context.Context, unit string) error
	Close()
}

// Where systemd listens, as host paths: its private socket (no dbus-daemon
// needed, root only), then the system bus.
const (
	systemdPrivateSocket = "/run/systemd/private"
	systemBusSocket      = "/run/dbus/system_bus_socket"
)

// DialSystemd connects to the host's systemd through the sockets under the
// host root (the DaemonSet mounts the host's /run/systemd and /run/dbus
// there). It fails when neither socket answers, as in a container without
// them; callers then report the unit state as unknown.
func DialSystemd(fsys hostfs.FS) func(ctx context.Context) (UnitManager, error) {
	return func(ctx context.Context) (UnitManager, error) {
		var errs []string
		for _, s := range []struct {
			path  string
			hello bool
		}{{systemdPrivateSocket, false}, {systemBusSocket, true}} {
			sock := fsys.Path(s.path)
			if _, err := os.Stat(sock); err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", s.path, unwrapPath(err)))
				continue
			}
			conn, err := sdbus.NewConnection(func() (*dbus.Conn, error) { return dialBus(ctx, sock, s.hello) })
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", s.path, err))
				continue
			}
			return &systemdUnits{conn: conn}, nil
		}
		return nil, errors.New(strings.Join(errs, "; "))
	}
}

// dialBus opens one authenticated connection. The systemd private socket
// is peer to peer, so it takes no Hello.
func dialBus(ctx context.Context, sock string, hello bool) (*dbus.Conn, error) {
	conn, err := dbus.Dial("unix:path="+sock, dbus.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	// EXTERNAL with the numeric uid: no user database lookup needed.
	if err := conn.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	if hello {
		if err := conn.Hello(); err != nil {
			conn.Close()
			return nil, fmt.Errorf("hello: %w", err)
		}
	}
	return conn, nil
}

type systemdUnits struct{ conn *sdbus.Conn }

func (s *systemdUnits) Close() { s.conn.Close() }

func (s *systemdUnits) UnitState(ctx context.Context, unit string) (string, error) {
	props, err := s.conn.GetUnitPropertiesContext(ctx, unit)
	if err != nil {
		return "", fmt.Errorf("systemd: %s: %w", unit, err)
	}
	load, _ := props["LoadState"].(string)
	active, _ := props["ActiveState"].(string)
	if load == "not-found" {
		return UnitNotFound, nil
	}
	if active == "" {
		return "", fmt.Errorf("systemd: %s: no ActiveState", unit)
	}
	if load == UnitMasked && !unitActive(active) {
		return UnitMasked, nil // stopped, and nothing can start it
	}
	return active, nil
}

func (s *systemdUnits) MaskUnit(ctx context.Context, unit string) error {
	if _, err := s.conn.MaskUnitFilesContext(ctx, []string{unit}, true, false); err != nil {
		return fmt.Errorf("systemd: mask %s: %w", unit, err)
	}
	return s.reload(ctx, "mask", unit)
}

func (s *systemdUnits) UnmaskUnit(ctx context.Context, unit string) error {
	if _, err := s.conn.UnmaskUnitFilesContext(ctx, []string{unit}, true); err != nil {
		return fmt.Errorf("systemd: unmask %s: %w", unit, err)
	}
	return s.reload(ctx, "unmask", unit)
}

// reload makes systemd read unit files again, as systemctl mask does:
// until then the unit's load state (and whether it can start) is the old.
func (s *systemdUnits) reload(ctx context.Context, verb, unit string) error {
	if err := s.conn.ReloadContext(ctx); err != nil {
		return fmt.Errorf("systemd: %s %s: reload: %w", verb, unit, err)
	}
	return nil
}

func (s *systemdUnits) StopUnit(ctx context.Context, unit string) error {
	return s.job(ctx, "stop", unit, s.conn.StopUnitContext)
}

func (s *systemdUnits) StartUnit(ctx context.Context, unit string) error {
	return s.job(ctx, "start", unit, s.conn.StartUnitContext)
}

// job runs a start or stop job in "replace" mode and waits for its result.
func (s *systemdUnits) job(ctx context.Context, verb, unit string, run func(context.Context, string, string, chan<- string) (int, error)) error {
	done := make(chan string, 1) // go-systemd sends while holding a lock
	if _, err := run(ctx, unit, "replace", done); err != nil {
		return fmt.Errorf("systemd: %s %s: %w", verb, unit, err)
	}
	select {
	case result := <-done:
		if result != "done" {
			return fmt.Errorf("systemd: %s %s: job %s", verb, unit, result)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("systemd: %s %s: %w", verb, unit, ctx.Err())
	}
}
