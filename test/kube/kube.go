// Package kube runs a real kube-apiserver on a real etcd, on loopback with
// free ports and temporary directories, for tests: an admin client, service
// account tokens bound to Pods (the node-name claim included), a stop and
// restart of the apiserver, and request counts read from the apiserver's
// own /metrics.
//
// The binaries come from test/tools (built once per version into the
// cache; `make tools` does it ahead of the tests).
package kube

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/gpunode/gpunode/kubeapi"
	"github.com/gpunode/gpunode/test/tools"
)

// Issuer is the service account token issuer of the test apiserver.
const Issuer = "https://kubernetes.default.svc.cluster.local"

// Cluster is a running etcd + kube-apiserver.
type Cluster struct {
	// URL of the apiserver ("https://127.0.0.1:PORT").
	URL string
	// Admin is a client in group system:masters; AdminConfig its config.
	Admin       kubernetes.Interface
	AdminConfig *rest.Config
	// AdminKube is the same admin as the agent's own client.
	AdminKube *kubeapi.Client

	dir, apiserverBin, etcdBin  string
	caPEM                       []byte
	apiPort, etcdPort, peerPort int
	extraArgs                   []string

	mu        sync.Mutex
	etcd      *process
	apiserver *process
}

// Options tune a cluster.
type Options struct {
	// Args are extra kube-apiserver flags ("--max-requests-inflight=800").
	Args []string
	// Tokens adds static bearer tokens: token -> "user,uid,group1|group2".
	Tokens map[string]string
}

const adminToken = "gpunode-test-admin"

// Start runs etcd and kube-apiserver under dir until Stop.
func Start(ctx context.Context, dir string, o Options) (*Cluster, error) {
	apiserverBin, err := tools.KubeAPIServer()
	if err != nil {
		return nil, err
	}
	etcdBin, err := tools.Etcd()
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, apiserverBin: apiserverBin, etcdBin: etcdBin, extraArgs: o.Args}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	c.apiPort, c.etcdPort, c.peerPort = ports[0], ports[1], ports[2]
	c.URL = fmt.Sprintf("https://127.0.0.1:%d", c.apiPort)
	if err := c.writeFiles(o.Tokens); err != nil {
		return nil, err
	}
	if err := c.startEtcd(ctx); err != nil {
		return nil, err
	}
	if err := c.StartAPIServer(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	c.AdminConfig = c.Config(adminToken)
	c.Admin, err = kubernetes.NewForConfig(c.AdminConfig)
	if err != nil {
		c.Stop()
		return nil, err
	}
	if c.AdminKube, err = c.Kube(adminToken); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// StartT starts a cluster for a test (or a TestMain with a nil t) and stops it at cleanup.
func StartT(t testing.TB, o Options) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// Config returns a client config for a bearer token, trusting the test CA.
func (c *Cluster) Config(token string) *rest.Config {
	return &rest.Config{
		Host:            c.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.caPEM},
		UserAgent:       "gpunode-test",
		QPS:             -1, // no client-side rate limit for the test's own client
	}
}

// Kube returns the agent's kind of client (kubeapi) for a bearer token.
func (c *Cluster) Kube(token string) (*kubeapi.Client, error) {
	return kubeapi.New(c.KubeConfig(token))
}

// KubeConfig is Kube's configuration, to change before kubeapi.New.
func (c *Cluster) KubeConfig(token string) *kubeapi.Config {
	return &kubeapi.Config{Host: c.URL, BearerToken: token, TLS: kubeapi.TLSConfig{CAData: c.caPEM}, UserAgent: "gpunode-test", QPS: -1}
}

// Dir is where the cluster keeps its files and logs.
func (c *Cluster) Dir() string { return c.dir }

// Kubeconfig writes a kubeconfig for a bearer token and returns its path.
func (c *Cluster) Kubeconfig(token string) (string, error) {
	f, err := os.CreateTemp(c.dir, "kubeconfig-")
	if err != nil {
		return "", err
	}
	ca := filepath.Join(c.dir, "ca.crt")
	fmt.Fprintf(f, `apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: %q, certificate-authority: %q}
users:
- name: test
  user: {token: %q}
contexts:
- name: test
  context: {cluster: test, user: test}
current-context: test
`, c.URL, ca, token)
	return f.Name(), f.Close()
}

func (c *Cluster) writeFiles(extraTokens map[string]string) error {
	for _, d := range []string{"etcd", "logs"} {
		if err := os.MkdirAll(filepath.Join(c.dir, d), 0o700); err != nil {
			return err
		}
	}
	caPEM, certPEM, keyPEM, err := servingCert()
	if err != nil {
		return err
	}
	c.caPEM = caPEM
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	saPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)})
	tokens := adminToken + ",admin,admin-uid,system:masters\n"
	for tok, rest := range extraTokens {
		tokens += tok + "," + rest + "\n"
	}
	for name, data := range map[string][]byte{
		"ca.crt": caPEM, "serving.crt": certPEM, "serving.key": keyPEM, "sa.key": saPEM, "tokens.csv": []byte(tokens),
	} {
		if err := os.WriteFile(filepath.Join(c.dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	client := fmt.Sprintf("http://127.0.0.1:%d", c.etcdPort)
	peer := fmt.Sprintf("http://127.0.0.1:%d", c.peerPort)
	p, err := startProcess(c.etcdBin, filepath.Join(c.dir, "logs", "etcd.log"),
		"--name=test", "--data-dir="+filepath.Join(c.dir, "etcd"),
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=test="+peer, "--log-level=warn",
		// Tests do not need durability; fsync on a busy shared disk is slow.
		"--unsafe-no-fsync")
	if err != nil {
		return err
	}
	c.etcd = p
	return waitHTTP(ctx, p, client+"/health", nil)
}

// StartAPIServer starts (or restarts after StopAPIServer) kube-apiserver on
// the same port, certificates and etcd, and waits until it is ready.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.apiserver != nil {
		return errors.New("kube-apiserver is already running")
	}
	f := func(name string) string { return filepath.Join(c.dir, name) }
	args := []string{
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", c.etcdPort),
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", c.apiPort),
		// Without it, an apiserver on 127.0.0.1 refuses to start.
		"--endpoint-reconciler-type=none",
		"--tls-cert-file=" + f("serving.crt"), "--tls-private-key-file=" + f("serving.key"),
		"--client-ca-file=" + f("ca.crt"),
		"--token-auth-file=" + f("tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-key-file=" + f("sa.key"), "--service-account-signing-key-file=" + f("sa.key"),
		"--service-account-issuer=" + Issuer,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--allow-privileged=true",
		"--cert-dir=" + f("certs"),
	}
	args = append(args, c.extraArgs...)
	p, err := startProcess(c.apiserverBin, f("logs/kube-apiserver.log"), args...)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.caPEM)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig(pool)}}
	if err := waitHTTP(ctx, p, c.URL+"/readyz", hc, "Authorization", "Bearer "+adminToken); err != nil {
		p.stop()
		return err
	}
	c.apiserver = p
	return nil
}

// StopAPIServer stops kube-apiserver (etcd keeps running).
func (c *Cluster) StopAPIServer() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.apiserver == nil {
		return nil
	}
	err := c.apiserver.stop()
	c.apiserver = nil
	return err
}

// Stop stops both processes.
func (c *Cluster) Stop() error {
	errs := []error{c.StopAPIServer()}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.etcd != nil {
		errs = append(errs, c.etcd.stop())
		c.etcd = nil
	}
	return errors.Join(errs...)
}

// BoundToken returns a service account token bound to a Pod (TokenRequest
// with a Pod bound object reference). The apiserver puts the Pod's node in
// the token, and authenticating with it gives the user the extra
// authentication.kubernetes.io/node-name (ServiceAccountTokenPodNodeInfo,
// beta and on by default since Kubernetes 1.30, GA in 1.32).
func (c *Cluster) BoundToken(ctx context.Context, namespace, serviceAccount string, pod *corev1.Pod) (string, error) {
	tr, err := c.Admin.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, serviceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: ptr(int64(3600)),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for %s/%s bound to pod %s: %w", namespace, serviceAccount, pod.Name, err)
	}
	return tr.Status.Token, nil
}

func ptr[T any](v T) *T { return &v }

// process is a child process with its log file.
type process struct {
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error
}

func startProcess(bin, logPath string, args ...string) (*process, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	// Die with the test binary, even when it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &process{cmd: cmd, log: log, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		log.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) stop() error {
	if p.exited() {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	return nil
}

// waitHTTP polls url until it answers 200, the process exits (its log
// tail is returned) or ctx ends.
func waitHTTP(ctx context.Context, p *process, url string, hc *http.Client, header ...string) error {
	if hc == nil {
		hc = &http.Client{Timeout: 2 * time.Second}
	}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if p.exited() {
			return fmt.Errorf("%s exited (%v) before %s was ready:\n%s", filepath.Base(p.cmd.Path), p.err, url, tail(p.log.Name()))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w\n%s", url, ctx.Err(), tail(p.log.Name()))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(bytes.TrimSpace(b))
}

// freePorts asks the kernel for n free loopback ports. Another process can
// take one before we bind it; the apiserver then fails to start and says so.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		_, port, _ := net.SplitHostPort(l.Addr().String())
		p, _ := strconv.Atoi(port)
		ports = append(ports, p)
	}
	return ports, nil
}

// servingCert makes a CA and a serving certificate for 127.0.0.1.
func servingCert() (caPEM, certPEM, keyPEM []byte, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gpunode-test-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

// GrantAgent binds the agent's permissions, as the chart's ClusterRole
// gives them (get and patch nodes, patch nodes/status, create events), to
// group, in a ClusterRole and binding called name. Granting twice is fine.
func (c *Cluster) GrantAgent(ctx context.Context, name, group string) error {
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "patch"}},
		{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}},
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create"}},
	}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name},
		Subjects: []rbacv1.Subject{{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: group}}}
	if _, err := c.Admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ClusterRole %s: %w", name, err)
	}
	if _, err := c.Admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ClusterRoleBinding %s: %w", name, err)
	}
	return nil
}

// CreateNamespace creates a namespace and its default ServiceAccount (no
// controller runs here to create it, and pods need it).
func (c *Cluster) CreateNamespace(ctx context.Context, name string) error {
	if _, err := c.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	if _, err := c.Admin.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create default ServiceAccount in %s: %w", name, err)
	}
	return nil
}

// CreatePod creates a pod bound to node (as the scheduler would) with
// the labels, and sets it Running (as its kubelet would).
func (c *Cluster) CreatePod(ctx context.Context, namespace, name, node string, labels map[string]string) (*corev1.Pod, error) {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "main", Image: "registry.example/main"}}},
	}
	p, err := c.Admin.CoreV1().Pods(namespace).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create pod %s/%s: %w", namespace, name, err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning}
	if p, err = c.Admin.CoreV1().Pods(namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		return nil, fmt.Errorf("set pod %s/%s running: %w", namespace, name, err)
	}
	return p, nil
}
