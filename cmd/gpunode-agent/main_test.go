package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gpunode/gpunode/sim"
)

func TestCLI(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(cfg, []byte("discovery:\n  interval: 2m\n"), 0o600)
	os.WriteFile(bad, []byte("discovery:\n  intervall: 2m\n"), 0o600)
	webUnknown := filepath.Join(t.TempDir(), "web-unknown.yml")
	os.WriteFile(webUnknown, []byte("basic_auth_user:\n  prom: x\n"), 0o600)
	webPlain := filepath.Join(t.TempDir(), "web-plain.yml")
	os.WriteFile(webPlain, []byte("basic_auth_users:\n  prom: s3cret\n"), 0o600)
	webConfig := filepath.Join(t.TempDir(), "config-web.yaml")
	os.WriteFile(webConfig, []byte("metrics:\n  webConfigFile: "+webPlain+"\n"), 0o600)
	for _, tc := range []struct {
		args        []string
		code        int
		out, errOut string
	}{
		{[]string{"--help"}, 0, "Commands:", ""},
		{[]string{"help", "inspect"}, 0, "-o, --output=text", ""},
		{[]string{"help", "inspect"}, 0, "gpunode.dev/verified,", ""},
		{[]string{"version"}, 0, "gpunode-agent dev", ""},
		{[]string{"--bogus"}, 2, "", "unknown long flag '--bogus'"},
		{[]string{"--config", cfg, "--config.check"}, 0, "configuration is valid", ""},
		{[]string{"--config", bad, "--config.check"}, 2, "", `line 2: unknown key "intervall" in discovery`},
		{[]string{"--config.check", "--log.level=loud"}, 2, "", `log.level: unknown level "loud"`},
		{[]string{"--config", cfg + ".missing", "inspect"}, 2, "", "no such file"},
		// --config.check refuses what run refuses, and run exits 2 for it.
		{[]string{"--config.check", "--web.config.file=/nonexistent/web.yml"}, 2, "", "no such file"},
		{[]string{"--config.check", "--web.config.file=" + webUnknown}, 2, "", "field basic_auth_user not found"},
		{[]string{"--config.check", "--web.config.file=" + webPlain}, 2, "", "takes bcrypt hashes"},
		{[]string{"--config", webConfig, "--config.check"}, 2, "", "metrics.webConfigFile"},
		{[]string{"--config.check", "--web.listen-address=:99999"}, 2, "", "out of range"},
		{[]string{"--simulate=cpu-only", "run", "--web.config.file=/nonexistent/web.yml"}, 2, "", "metrics.webConfigFile"},
		{[]string{"--simulate=cpu-only", "run", "--web.listen-address=:99999"}, 2, "", "metrics.listenAddress"},
		{[]string{"inspect", "--simulate=nope"}, 2, "", "enum value must be one of"},
		{[]string{"--host-root=/", "--simulate=cpu-only", "inspect"}, 2, "", "exclude each other"},
		{[]string{"--host-root=/nonexistent", "inspect"}, 2, "", "--host-root: host root: stat /nonexistent: no such file or directory"},
		{[]string{"--host-root=" + cfg, "verify"}, 2, "", "is not a directory"},
		{[]string{"inspect", "-o", "yaml"}, 2, "", "enum value"},
		{[]string{"--simulate=cpu-only", "verify", "--expected-gpus=abc"}, 2, "", `--expected-gpus: want a whole number, got "abc"`},
		{[]string{"probe", "bw", "--peer=x", "--size=abc"}, 2, "", `--size: want a whole number, got "abc"`},
		{[]string{"probe", "lat", "--peer=x", "--timeout=zz"}, 2, "", `--timeout: want a duration such as 30s, 5m or 1h, got "zz"`},
		{[]string{"--config.check", "--discovery.interval=soon"}, 2, "", `--discovery.interval: want a duration such as 30s, 5m or 1h, got "soon"`},
		{[]string{"--simulate=cpu-only", "inspect", "-o", "labels"}, 0, "gpunode.dev/gpu.present=false", ""},
	} {
		var out, errOut bytes.Buffer
		code := run(tc.args, &out, &errOut)
		if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errOut.String(), tc.errOut) {
			t.Errorf("%v: exit %d (want %d)\nstdout: %s\nstderr: %s", tc.args, code, tc.code, out.String(), errOut.String())
		}
	}
}

// A relative --host-root is resolved against the working directory.
func TestRelativeHostRoot(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "tree"), 0o755)
	if _, err := sim.Build("cpu-only", filepath.Join(dir, "tree")); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	var out, errOut bytes.Buffer
	if code := run([]string{"--host-root=tree", "inspect", "-o", "json"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var s struct {
		NUMANodes []json.RawMessage `json:"numa_nodes"`
	}
	if err := json.Unmarshal(out.Bytes(), &s); err != nil || len(s.NUMANodes) != 2 {
		t.Errorf("inspect of the relative tree: %v, %d NUMA nodes", err, len(s.NUMANodes))
	}
}

func TestInspectOutputs(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"--simulate=dgx-h100-ib", "inspect", "-o", "labels"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	want, err := os.ReadFile("../../report/testdata/dgx-h100-ib.labels")
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != string(want) {
		t.Errorf("inspect -o labels differs from the golden labels:\n%s", out.String())
	}
	out.Reset()
	if code := run([]string{"--simulate=h100-roce", "inspect", "-o", "json"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var s struct {
		GPUs    []json.RawMessage `json:"gpus"`
		Sources []struct{ Name, State string }
	}
	if err := json.Unmarshal(out.Bytes(), &s); err != nil || len(s.GPUs) != 8 || len(s.Sources) != 5 { // amdgpu, nvml, rdma, settings, topology
		t.Fatalf("inspect -o json: %v, %d GPUs, %d sources", err, len(s.GPUs), len(s.Sources))
	}
	out.Reset()
	// This machine has no GPU and no RDMA: inspect says so plainly and exits 0.
	if code := run([]string{"inspect"}, &out, &errOut); code != 0 {
		t.Fatalf("inspect on this host: exit %d: %s", code, errOut.String())
	}
	for _, w := range []string{"GPUs: none found (nvml absent:", "RDMA: none found (rdma absent:"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("inspect on a machine without GPUs lacks %q:\n%s", w, out.String())
		}
	}
}

var binDir string

func TestMain(m *testing.M) {
	var err error
	if binDir, err = os.MkdirTemp("", "gpunode-agent-test-"); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// buildAgent compiles the binary once for the tests that run it as a process.
var buildAgent = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(binDir, "gpunode-agent")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", &exec.ExitError{Stderr: out}
	}
	return bin, nil
})

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// The agent speaks systemd's notify protocol on a real datagram socket:
// READY after the first discovery, WATCHDOG from the main loop, RELOADING
// and READY around a SIGHUP reload, STOPPING on SIGTERM, then exit 0.
func TestSystemdProtocol(t *testing.T) {
	bin, err := buildAgent()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				msgs <- line
			}
		}
	}()
	expect := func(want string) {
		t.Helper()
		deadline := time.After(15 * time.Second)
		for {
			select {
			case m := <-msgs:
				if m == want {
					return
				}
			case <-deadline:
				t.Fatalf("no %q from the agent", want)
			}
		}
	}

	cfg := filepath.Join(dir, "config.yaml")
	addr := freePort(t)
	os.WriteFile(cfg, []byte("metrics:\n  listenAddress: "+addr+"\n"), 0o600)
	cmd := exec.Command(bin, "run", "--simulate=cpu-only", "--config", cfg)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=200000", "NODE_NAME=")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var logMu sync.Mutex
	var logs strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logMu.Lock()
			logs.WriteString(sc.Text() + "\n")
			logMu.Unlock()
		}
	}()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	logged := func(s string) bool {
		logMu.Lock()
		defer logMu.Unlock()
		return strings.Contains(logs.String(), s)
	}

	expect("READY=1")
	expect("WATCHDOG=1")
	// One line says where metrics are served, not three (exporter-toolkit's
	// "Listening on" and "TLS is disabled." are debug).
	time.Sleep(100 * time.Millisecond)
	logMu.Lock()
	if n := strings.Count(logs.String(), "address="+addr); n != 1 || !strings.Contains(logs.String(), "web_config=\"none (plain HTTP") {
		t.Errorf("%d log lines about the metrics listener, want 1:\n%s", n, logs.String())
	}
	logMu.Unlock()

	os.WriteFile(cfg, []byte("metrics:\n  listenAddress: "+freePort(t)+"\nlog:\n  level: debug\n"), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	expect("RELOADING=1")
	expect("READY=1")

	os.WriteFile(cfg, []byte("log:\n  levle: debug\n"), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	expect("READY=1")

	cmd.Process.Signal(syscall.SIGTERM)
	expect("STOPPING=1")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent exited with %v\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("agent did not stop on SIGTERM")
	}
	for _, w := range []string{
		"config changes that take effect only after a restart were ignored",
		"configuration reloaded",
		`config reload failed; keeping the running configuration`,
		`unknown key \"levle\" in log`,
		"shutting down",
	} {
		if !logged(w) {
			t.Errorf("log lacks %q:\n%s", w, logs.String())
		}
	}
}

// A cold `make build` compiles the cgo dependencies for minutes: it says
// so before it starts, so it does not look hung.
func TestMakeBuildSaysItMayTakeMinutes(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	out, err := exec.Command("make", "-n", "-C", "../..", "build").CombinedOutput()
	if err != nil {
		t.Fatalf("make -n build: %v\n%s", err, out)
	}
	say := strings.Index(string(out), "may take minutes")
	build := strings.Index(string(out), "go build")
	if say < 0 || build < 0 || say > build {
		t.Errorf("make build prints no progress line before compiling:\n%s", out)
	}
}
