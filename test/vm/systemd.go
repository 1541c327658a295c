package vm

import (
	"os"
	"path/filepath"
	"strings"
)

// systemdParts are the files a systemd boot adds to the initramfs.
type systemdParts struct {
	files   []File
	libPath []string
}

// systemdFiles takes systemd and systemctl from Debian's packages (the
// private libraries from libsystemd-shared and systemd itself, the rest
// of their libraries from this machine, as ldd finds them), plus the
// units that run the script.
func systemdFiles() (systemdParts, error) {
	sd, err := Package("systemd")
	if err != nil {
		return systemdParts{}, err
	}
	shared, err := Package("libsystemd-shared")
	if err != nil {
		return systemdParts{}, err
	}
	var p systemdParts
	for _, dir := range []string{sd, shared} {
		p.libPath = append(p.libPath, filepath.Join(dir, "usr/lib/x86_64-linux-gnu/systemd"))
	}
	p.files = []File{
		{Path: "/lib/systemd/systemd", HostPath: filepath.Join(sd, "lib/systemd/systemd"), Libraries: true},
		{Path: "/bin/systemctl", HostPath: filepath.Join(sd, "bin/systemctl"), Libraries: true},
		{Path: "/etc/passwd", Data: []byte("root:x:0:0:root:/root:/bin/sh\n")},
		{Path: "/etc/group", Data: []byte("root:x:0:\n")},
		{Path: "/etc/machine-id", Data: nil}, // empty: systemd makes up one for this boot
		{Path: "/etc/os-release", Data: []byte("ID=debian\nNAME=\"gpunode test VM\"\n")},
		{Path: "/etc/systemd/system/gpunode.target", Data: []byte(`[Unit]
Description=gpunode test
DefaultDependencies=no
Wants=gpunode-script.service
`)},
		{Path: "/etc/systemd/system/gpunode-script.service", Data: []byte(`[Unit]
Description=gpunode test script
DefaultDependencies=no

[Service]
Type=oneshot
ExecStart=/bin/sh /gpunode-run.sh
StandardInput=null
`)},
	}
	return p, nil
}

// packageRoot returns the unpacked package directory dir lies in (under
// the cache's debs directory), or "".
func packageRoot(dir string) string {
	debs, err := debDir()
	if err != nil || !strings.HasPrefix(dir, debs+"/") {
		return ""
	}
	rest := strings.TrimPrefix(dir, debs+"/")
	name, _, _ := strings.Cut(rest, "/")
	root := filepath.Join(debs, name)
	if _, err := os.Stat(filepath.Join(root, ".complete")); err != nil {
		return ""
	}
	return root
}
