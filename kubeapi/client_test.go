package kubeapi

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestStatusErrors(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		switch r.URL.Path {
		case "/api/v1/nodes/missing":
			w.WriteHeader(404)
			fmt.Fprint(w, `{"kind":"Status","status":"Failure","reason":"NotFound","message":"nodes \"missing\" not found","code":404}`)
		case "/api/v1/nodes/proxy":
			w.WriteHeader(502)
			fmt.Fprint(w, "<html>bad gateway</html>")
		case "/api/v1/nodes/busy": // Retry-After twice, then the node
			if n <= 3 {
				w.Header().Set("Retry-After", "0")
				w.WriteHeader(429)
				return
			}
			fmt.Fprint(w, `{"metadata":{"name":"busy","uid":"u1","labels":{"a":"b"}},"spec":{"taints":[{"key":"k","effect":"NoSchedule","future":1}]}}`)
		case "/api/v1/nodes/conflict":
			w.WriteHeader(409)
			fmt.Fprint(w, `{"kind":"Status","reason":"Conflict","message":"Apply failed with 1 conflict","details":{"causes":[{"reason":"FieldManagerConflict","message":"conflict with \"x\"","field":".metadata.labels.a"}]}}`)
		case "/api/v1/nodes/garbage":
			fmt.Fprint(w, `{"metadata":`)
		}
	}))
	defer srv.Close()
	c, err := New(&Config{Host: srv.URL, QPS: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.GetNode(ctx, "missing"); !IsNotFound(err) || err.Error() != `nodes "missing" not found` {
		t.Errorf("missing: %v", err)
	}
	if _, err := c.GetNode(ctx, "proxy"); err == nil || IsNotFound(err) || !strings.Contains(err.Error(), "502: <html>bad gateway</html>") {
		t.Errorf("proxy: %v", err)
	}
	calls.Store(1)
	n, err := c.GetNode(ctx, "busy")
	if err != nil || n.Name != "busy" || n.UID != "u1" || n.Labels["a"] != "b" || string(n.Spec.Taints[0].Raw) != `{"key":"k","effect":"NoSchedule","future":1}` {
		t.Errorf("busy: %+v %v", n, err)
	}
	_, err = c.GetNode(ctx, "conflict")
	se, ok := err.(*StatusError)
	if !IsConflict(err) || IsAlreadyExists(err) || !ok || len(se.Causes) != 1 || se.Causes[0].Type != "FieldManagerConflict" {
		t.Errorf("conflict: %#v", err)
	}
	if _, err := c.GetNode(ctx, "garbage"); err == nil || !strings.Contains(err.Error(), "decode response") {
		t.Errorf("garbage: %v", err)
	}
	if _, err := New(&Config{Host: "10.0.0.1:443"}); err == nil {
		t.Error("a host without a scheme is accepted")
	}
	if _, err := New(&Config{Host: "https://h", TLS: TLSConfig{CAData: []byte("not pem")}}); err == nil {
		t.Error("a CA without a certificate is accepted")
	}
}

func TestListPages(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("limit") != "500" || r.URL.Query().Get("labelSelector") != "app=a" {
			w.WriteHeader(400)
			return
		}
		switch r.URL.Query().Get("continue") {
		case "":
			fmt.Fprint(w, `{"metadata":{"continue":"p2"},"items":[{"metadata":{"name":"a"},"spec":{"nodeName":"n1"},"status":{"phase":"Running","podIP":"10.0.0.1"}}]}`)
		case "p2":
			fmt.Fprint(w, `{"metadata":{},"items":[{"metadata":{"name":"b"}}]}`)
		}
	}))
	defer srv.Close()
	c, _ := New(&Config{Host: srv.URL, QPS: -1})
	pods, err := c.ListPods(context.Background(), "ns", "app=a")
	if err != nil || len(pods) != 2 || pods[0].Spec.NodeName != "n1" || pods[0].Status.PodIP != "10.0.0.1" || pods[1].Name != "b" {
		t.Errorf("%+v %v", pods, err)
	}
}

// The credential plugin runs once, again when its token is refused, and
// its token goes in the header.
func TestExecPlugin(t *testing.T) {
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	plugin := filepath.Join(dir, "cred")
	os.WriteFile(plugin, []byte(`#!/bin/sh
echo x >> `+count+`
n=$(wc -l < `+count+`)
case "$KUBERNETES_EXEC_INFO" in *'"interactive":false'*) ;; *) echo "bad exec info: $KUBERNETES_EXEC_INFO" >&2; exit 1;; esac
echo '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"tok'$n'"}}'
`), 0o755)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok2" {
			w.WriteHeader(401)
			return
		}
		fmt.Fprint(w, `{"metadata":{"name":"n"}}`)
	}))
	defer srv.Close()
	c, err := New(&Config{Host: srv.URL, QPS: -1, Exec: &ExecConfig{APIVersion: "client.authentication.k8s.io/v1", Command: plugin}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetNode(context.Background(), "n"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetNode(context.Background(), "n"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(count); strings.Count(string(b), "x") != 2 {
		t.Errorf("plugin ran %d times, want 2", strings.Count(string(b), "x"))
	}
	for name, e := range map[string]ExecConfig{
		"missing":     {APIVersion: "v", Command: filepath.Join(dir, "nope"), InstallHint: "install nope"},
		"wrong kind":  {APIVersion: "v", Command: "/bin/echo", Args: []string{`{"apiVersion":"v","kind":"Other"}`}},
		"no token":    {APIVersion: "v", Command: "/bin/echo", Args: []string{`{"apiVersion":"v","kind":"ExecCredential","status":{}}`}},
		"not json":    {APIVersion: "v", Command: "/bin/echo", Args: []string{"hello"}},
		"interactive": {APIVersion: "v", Command: "/bin/true", InteractiveMode: "Always"},
	} {
		c, _ := New(&Config{Host: srv.URL, QPS: -1, Exec: &e})
		if _, err := c.GetNode(context.Background(), "n"); err == nil {
			t.Errorf("%s: no error", name)
		} else if name == "missing" && !strings.Contains(err.Error(), "install nope") {
			t.Errorf("missing: %v", err)
		}
	}
}

func TestTokenFileReread(t *testing.T) {
	p := filepath.Join(t.TempDir(), "token")
	os.WriteFile(p, []byte("one\n"), 0o600)
	tf := &tokenFile{path: p}
	if tok, err := tf.get(); tok != "one" || err != nil {
		t.Fatalf("%q %v", tok, err)
	}
	os.WriteFile(p, []byte("two"), 0o600)
	if tok, _ := tf.get(); tok != "one" {
		t.Errorf("re-read within a minute: %q", tok)
	}
	tf.read = time.Now().Add(-2 * tokenReread)
	if tok, _ := tf.get(); tok != "two" {
		t.Errorf("not re-read: %q", tok)
	}
	os.Remove(p)
	tf.read = time.Time{}
	if tok, err := tf.get(); tok != "two" || err != nil {
		t.Errorf("file gone: last token kept? %q %v", tok, err)
	}
	if _, err := (&tokenFile{path: p}).get(); err == nil {
		t.Error("no error without a token")
	}
}

func TestLimiter(t *testing.T) {
	l := newLimiter(1000, 3)
	start := time.Now()
	for range 13 { // 3 at once, then 10 at 1 ms
		if err := l.wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d < 9*time.Millisecond {
		t.Errorf("13 requests at 1000/s with burst 3 took %v", d)
	}
	slow := newLimiter(0.001, 1)
	slow.wait(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := slow.wait(ctx); err == nil {
		t.Error("wait outlived its context")
	}
	if newLimiter(-1, 0) != nil {
		t.Error("negative QPS limits")
	}
}
