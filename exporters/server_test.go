package exporters

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/bcrypt"

	"github.com/gpunode/gpunode/internal/source"
	"github.com/gpunode/gpunode/snapshot"
)

func testSnapshot() *snapshot.Snapshot {
	return &snapshot.Snapshot{
		TakenAt:   time.Unix(1700000000, 0),
		Simulated: "cpu-only",
		Sources: []source.Status{
			{Name: "nvml", State: source.Absent, Duration: time.Millisecond},
			{Name: "rdma", State: source.Error, Duration: 2 * time.Millisecond},
		},
	}
}

func TestAgentCollector(t *testing.T) {
	var s *snapshot.Snapshot
	c := NewAgentCollector(func() *snapshot.Snapshot { return s }, BuildInfo{Version: "1.0", Revision: "abc", GoVersion: "go1.26"})
	if n := testutil.CollectAndCount(c); n != 1 {
		t.Fatalf("before the first discovery: %d series, want only build info", n)
	}
	s = testSnapshot()
	want := `
# HELP gpunode_source_up 1 if the source's last run (discovery or sampling) succeeded or found its hardware absent, 0 if it failed.
# TYPE gpunode_source_up gauge
gpunode_source_up{source="nvml"} 1
gpunode_source_up{source="rdma"} 0
# HELP gpunode_source_state 1 for the state (ok, absent, degraded, error) of the source's last run (discovery or sampling), 0 for the others; degraded: read, but some readings through a fallback (a format or library version it cannot decode).
# TYPE gpunode_source_state gauge
gpunode_source_state{source="nvml",state="absent"} 1
gpunode_source_state{source="nvml",state="degraded"} 0
gpunode_source_state{source="nvml",state="error"} 0
gpunode_source_state{source="nvml",state="ok"} 0
gpunode_source_state{source="rdma",state="absent"} 0
gpunode_source_state{source="rdma",state="degraded"} 0
gpunode_source_state{source="rdma",state="error"} 1
gpunode_source_state{source="rdma",state="ok"} 0
# HELP gpunode_simulated 1 when the agent runs on a simulated node (--simulate), labelled with its name.
# TYPE gpunode_simulated gauge
gpunode_simulated{node="cpu-only"} 1
# HELP gpunode_snapshot_timestamp_seconds Unix time of the last completed discovery.
# TYPE gpunode_snapshot_timestamp_seconds gauge
gpunode_snapshot_timestamp_seconds 1.7e+09
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "gpunode_source_up", "gpunode_source_state", "gpunode_simulated", "gpunode_snapshot_timestamp_seconds"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("metric lint: %v %+v", err, problems)
	}
}

func serve(t *testing.T, webConfig string, h Health) string {
	t.Helper()
	reg, err := NewRegistry(NewAgentCollector(testSnapshot, BuildInfo{}))
	if err != nil {
		t.Fatal(err)
	}
	handler, err := NewHandler(reg, h, "test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Listen("127.0.0.1:0", webConfig, handler, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(t.Context()) })
	return srv.Addr().String()
}

func TestHealthEndpoints(t *testing.T) {
	addr := serve(t, "", Health{Live: func() error { return nil }, Ready: func() error { return errors.New("first discovery not finished") }})
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 503, "/metrics": 200, "/": 200} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s = %d %s, want %d", path, resp.StatusCode, body, want)
		}
	}
}

// --web.config.file is exporter-toolkit's: TLS and basic auth both apply.
func TestWebConfigTLSAndBasicAuth(t *testing.T) {
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	cfg := filepath.Join(dir, "web.yml")
	os.WriteFile(cfg, []byte("tls_server_config:\n  cert_file: "+cert+"\n  key_file: "+key+"\nbasic_auth_users:\n  prom: "+bcryptHash(t, "s3cret")+"\n"), 0o600)
	addr := serve(t, cfg, Health{Live: func() error { return nil }, Ready: func() error { return nil }})
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for _, tc := range []struct {
		user, pass string
		want       int
	}{{"", "", 401}, {"prom", "wrong", 401}, {"prom", "s3cret", 200}} {
		req, _ := http.NewRequest("GET", "https://"+addr+"/metrics", nil)
		if tc.user != "" {
			req.SetBasicAuth(tc.user, tc.pass)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("user %q: %d, want %d", tc.user, resp.StatusCode, tc.want)
		}
	}
	// Go's TLS server answers plain HTTP with 400 and nothing else.
	if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP on the TLS listener: %d", resp.StatusCode)
		}
	}
}

func TestListenRejectsBadWebConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "web.yml")
	os.WriteFile(cfg, []byte("tls_server_config:\n  cert_file: /nonexistent\n"), 0o600)
	if _, err := Listen("127.0.0.1:0", cfg, http.NotFoundHandler(), slog.Default()); err == nil {
		t.Fatal("a broken web config was accepted")
	}
}

// The web config is read once at start: editing it (dropping basic auth,
// or breaking it) changes nothing until a restart. Relative certificate
// paths resolve against the config's directory, as exporter-toolkit does.
func TestWebConfigReadOnce(t *testing.T) {
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	cfg := filepath.Join(dir, "web.yml")
	write := func(s string) {
		if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("tls_server_config:\n  cert_file: " + filepath.Base(cert) + "\n  key_file: " + filepath.Base(key) + "\nbasic_auth_users:\n  prom: " + bcryptHash(t, "s3cret") + "\n")
	addr := serve(t, cfg, Health{Live: func() error { return nil }, Ready: func() error { return nil }})
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}}
	check := func(when string) {
		t.Helper()
		for _, tc := range []struct {
			user string
			want int
		}{{"", 401}, {"prom", 200}} {
			req, _ := http.NewRequest("GET", "https://"+addr+"/metrics", nil)
			if tc.user != "" {
				req.SetBasicAuth(tc.user, "s3cret")
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", when, err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("%s, user %q: %d, want %d", when, tc.user, resp.StatusCode, tc.want)
			}
		}
	}
	check("as started")
	write("tls_server_config:\n  cert_file: " + cert + "\n  key_file: " + key + "\n")
	check("after basic auth was removed from the file")
	write("not: [valid")
	check("after the file was broken")
}

// bcryptHash is password as a web config's basic_auth_users takes it.
func bcryptHash(t *testing.T, password string) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(hash)
}
