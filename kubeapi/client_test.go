package kubeapi

import (
	"context"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Error responses, as the API server and a proxy in front of it answer,
// and a 429 with Retry-After, which client-go retries.
func TestStatusErrors(t *testing.T) {
	var busy atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/v1/nodes/missing":
			w.WriteHeader(404)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","message":"nodes \"missing\" not found","code":404}`)
		case "/api/v1/nodes/proxy":
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(502)
			fmt.Fprint(w, "<html>bad gateway</html>")
		case "/api/v1/nodes/busy": // Retry-After twice, then the node
			if busy.Add(1) <= 2 {
				w.Header().Set("Retry-After", "0")
				w.WriteHeader(429)
				return
			}
			fmt.Fprint(w, `{"metadata":{"name":"busy","uid":"u1","labels":{"a":"b"}},"spec":{"taints":[{"key":"k","effect":"NoSchedule","future":1}]}}`)
		case "/api/v1/nodes/conflict":
			w.WriteHeader(409)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Conflict","message":"Apply failed with 1 conflict","code":409,"details":{"causes":[{"reason":"FieldManagerConflict","message":"conflict with \"x\"","field":".metadata.labels.a"}]}}`)
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
	_, err = c.GetNode(ctx, "proxy")
	if se, ok := err.(*StatusError); !ok || se.Code != 502 || IsNotFound(err) || !strings.Contains(err.Error(), "<html>bad gateway</html>") {
		t.Errorf("proxy: %#v", err)
	}
	n, err := c.GetNode(ctx, "busy")
	if err != nil || n.Name != "busy" || n.UID != "u1" || n.Labels["a"] != "b" || string(n.Spec.Taints[0].Raw) != `{"key":"k","effect":"NoSchedule","future":1}` {
		t.Errorf("busy: %+v %v", n, err)
	}
	_, err = c.GetNode(ctx, "conflict")
	se, ok := err.(*StatusError)
	if !IsConflict(err) || IsAlreadyExists(err) || !ok || len(se.Causes) != 1 || se.Causes[0].Type != "FieldManagerConflict" || se.Causes[0].Field != ".metadata.labels.a" {
		t.Errorf("conflict: %#v", err)
	}
	// client-go's helpers read the package's errors too.
	if !apierrors.IsConflict(fmt.Errorf("apply: %w", err)) || apierrors.HasStatusCause(err, "FieldValueInvalid") || !apierrors.HasStatusCause(err, "FieldManagerConflict") {
		t.Errorf("conflict through apierrors: %v", err)
	}
	if _, err := c.GetNode(ctx, "garbage"); err == nil || !strings.Contains(err.Error(), "decode response") {
		t.Errorf("garbage: %v", err)
	}
	if _, err := New(&Config{Host: "https://h", TLS: TLSConfig{CAData: []byte("not pem")}}); err == nil {
		t.Error("a CA without a certificate is accepted")
	}
}

func TestListPages(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path != "/api/v1/namespaces/ns/pods" || r.URL.Query().Get("limit") != "500" || r.URL.Query().Get("labelSelector") != "app=a" {
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
	c, err := New(&Config{Host: srv.URL, QPS: -1})
	if err != nil {
		t.Fatal(err)
	}
	pods, err := c.ListPods(context.Background(), "ns", "app=a")
	if err != nil || len(pods) != 2 || pods[0].Spec.NodeName != "n1" || pods[0].Status.PodIP != "10.0.0.1" || pods[1].Name != "b" {
		t.Errorf("%+v %v", pods, err)
	}
}

// Clients with equal TLS settings share client-go's cached transport (one
// connection); a Proxy of their own gives each its own.
func TestTransportSharing(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"metadata":{"name":"n"}}`)
	}))
	srv.EnableHTTP2 = true
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	for _, tc := range []struct {
		proxy func(*http.Request) (*url.URL, error)
		want  int32
	}{{nil, 1}, {http.ProxyFromEnvironment, 2}} {
		conns.Store(0)
		for range 2 {
			c, err := New(&Config{Host: srv.URL, TLS: TLSConfig{CAData: ca}, Proxy: tc.proxy, QPS: -1})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.GetNode(context.Background(), "n"); err != nil {
				t.Fatal(err)
			}
		}
		if got := conns.Load(); got != tc.want {
			t.Errorf("proxy %v: %d connections, want %d", tc.proxy != nil, got, tc.want)
		}
	}
}

// A node's pods: every namespace, filtered by the server on spec.nodeName.
func TestListPodsOnNode(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path != "/api/v1/pods" || r.URL.Query().Get("fieldSelector") != "spec.nodeName=gpu-1" || r.URL.Query().Get("limit") != "500" {
			w.WriteHeader(400)
			return
		}
		fmt.Fprint(w, `{"metadata":{},"items":[{"metadata":{"name":"a","namespace":"llm","uid":"u1","labels":{"llm-d.ai/role":"decode"}},"spec":{"nodeName":"gpu-1"}}]}`)
	}))
	defer srv.Close()
	c, err := New(&Config{Host: srv.URL, QPS: -1})
	if err != nil {
		t.Fatal(err)
	}
	pods, err := c.ListPodsOnNode(context.Background(), "gpu-1")
	if err != nil || len(pods) != 1 || pods[0].UID != "u1" || pods[0].Namespace != "llm" || pods[0].Labels["llm-d.ai/role"] != "decode" {
		t.Errorf("%+v %v", pods, err)
	}
}
