package kubeapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Client makes requests to one API server. It is safe for concurrent use.
type Client struct {
	base      *url.URL
	hc        *http.Client
	userAgent string
	limit     *limiter

	token     string
	tokenFile *tokenFile
	user      string
	password  string
	exec      *execCredentials
}

// maxBody bounds a response read into memory (a page of 500 Nodes with
// their managedFields is a few MiB).
const maxBody = 256 << 20

// maxRetries bounds the retries of a request the server asked to repeat
// later (429 or 5xx with Retry-After), and maxRetryWait each wait.
const (
	maxRetries   = 5
	maxRetryWait = 10 * time.Second
)

// New returns a client for cfg.
func New(cfg *Config) (*Client, error) {
	base, err := url.Parse(cfg.Host)
	if err != nil || base.Host == "" || (base.Scheme != "https" && base.Scheme != "http") {
		return nil, fmt.Errorf("kubernetes API server %q: not an http(s) URL", cfg.Host)
	}
	base.Path = strings.TrimSuffix(base.Path, "/")
	tlsCfg := &tls.Config{ServerName: cfg.TLS.ServerName, InsecureSkipVerify: cfg.TLS.Insecure, MinVersion: tls.VersionTLS12}
	if len(cfg.TLS.CAData) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cfg.TLS.CAData) {
			return nil, errors.New("kubernetes API server CA: no PEM certificate in it")
		}
		tlsCfg.RootCAs = pool
	}
	if cfg.TLS.CertData != nil {
		c, err := tls.X509KeyPair(cfg.TLS.CertData, cfg.TLS.KeyData)
		if err != nil {
			return nil, fmt.Errorf("kubernetes client certificate: %w", err)
		}
		tlsCfg.Certificates = []tls.Certificate{c}
	}
	c := &Client{base: base, userAgent: cfg.UserAgent, limit: newLimiter(cfg.QPS, cfg.Burst),
		token: cfg.BearerToken, user: cfg.Username, password: cfg.Password}
	if cfg.BearerTokenFile != "" && cfg.BearerToken == "" {
		c.tokenFile = &tokenFile{path: cfg.BearerTokenFile}
	}
	if cfg.Exec != nil {
		c.exec = &execCredentials{cfg: *cfg.Exec}
		if len(tlsCfg.Certificates) == 0 {
			tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				ctx, cancel := context.WithTimeout(context.Background(), execTimeout)
				defer cancel()
				_, cert, err := c.exec.get(ctx)
				if err != nil || cert == nil {
					return &tls.Certificate{}, err // none: the plugin gives a token
				}
				return cert, nil
			}
		}
	}
	proxy := http.ProxyFromEnvironment
	if cfg.ProxyURL != "" {
		u, err := url.Parse(cfg.ProxyURL)
		if err != nil {
			return nil, fmt.Errorf("kubernetes proxy-url: %w", err)
		}
		proxy = http.ProxyURL(u)
	}
	c.hc = &http.Client{Timeout: cfg.Timeout, Transport: &http.Transport{
		Proxy: proxy, TLSClientConfig: tlsCfg, ForceAttemptHTTP2: true,
		TLSHandshakeTimeout: 10 * time.Second, IdleConnTimeout: 90 * time.Second, MaxIdleConnsPerHost: 4,
	}}
	return c, nil
}

// request is one API call.
type request struct {
	method, path string
	query        url.Values
	contentType  string
	body         []byte
}

// do sends r and decodes a successful response into out (unless nil). A
// response with an error status is a *StatusError.
func (c *Client) do(ctx context.Context, r request, out any) error {
	u := *c.base
	u.Path += r.path
	u.RawQuery = r.query.Encode()
	refreshed := false
	for attempt := 0; ; attempt++ {
		if err := c.limit.wait(ctx); err != nil {
			return err
		}
		code, body, header, err := c.send(ctx, r, u.String())
		if err != nil {
			return fmt.Errorf("%s %s: %w", r.method, u.Path, err)
		}
		if code >= 200 && code < 300 {
			if out == nil {
				return nil
			}
			if err := json.Unmarshal(body, out); err != nil {
				return fmt.Errorf("%s %s: decode response: %w", r.method, u.Path, err)
			}
			return nil
		}
		if code == http.StatusUnauthorized && c.exec != nil && !refreshed {
			c.exec.refused()
			refreshed = true
			continue
		}
		if wait, ok := retryAfter(code, header); ok && attempt < maxRetries {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
			continue
		}
		return newStatusError(code, body)
	}
}

func (c *Client) send(ctx context.Context, r request, u string) (int, []byte, http.Header, error) {
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Accept", "application/json")
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	if err := c.authorize(ctx, req); err != nil {
		return 0, nil, nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("read response: %w", err)
	}
	if len(b) > maxBody {
		return 0, nil, nil, fmt.Errorf("response larger than %d MiB", maxBody>>20)
	}
	return resp.StatusCode, b, resp.Header, nil
}

func (c *Client) authorize(ctx context.Context, req *http.Request) error {
	token := c.token
	switch {
	case c.tokenFile != nil:
		t, err := c.tokenFile.get()
		if err != nil {
			return err
		}
		token = t
	case c.exec != nil:
		t, _, err := c.exec.get(ctx)
		if err != nil {
			return err
		}
		token = t
	}
	switch {
	case token != "":
		req.Header.Set("Authorization", "Bearer "+token)
	case c.user != "" || c.password != "":
		req.SetBasicAuth(c.user, c.password)
	}
	return nil
}

// retryAfter is the wait a 429 or 5xx response with Retry-After asks for.
func retryAfter(code int, h http.Header) (time.Duration, bool) {
	if code != http.StatusTooManyRequests && code < 500 {
		return 0, false
	}
	s, err := strconv.Atoi(h.Get("Retry-After"))
	if err != nil || s < 0 {
		return 0, false
	}
	return min(time.Duration(s)*time.Second, maxRetryWait), true
}

// tokenFile re-reads a token file at most once a minute, as bound service
// account tokens are rotated in place.
type tokenFile struct {
	path string

	mu    sync.Mutex
	token string
	read  time.Time
}

const tokenReread = time.Minute

func (t *tokenFile) get() (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.token != "" && time.Since(t.read) < tokenReread {
		return t.token, nil
	}
	b, err := os.ReadFile(t.path)
	if err != nil {
		if t.token != "" { // keep the last one while the file is being replaced
			return t.token, nil
		}
		return "", fmt.Errorf("bearer token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("bearer token file %s is empty", t.path)
	}
	t.token, t.read = tok, time.Now()
	return t.token, nil
}

// limiter is a token bucket: qps requests a second, bursts of burst.
type limiter struct {
	qps, burst float64

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newLimiter(qps float64, burst int) *limiter {
	if qps < 0 {
		return nil
	}
	if qps == 0 {
		qps = 5
	}
	if burst <= 0 {
		burst = 10
	}
	return &limiter{qps: qps, burst: float64(burst), tokens: float64(burst)}
}

func (l *limiter) wait(ctx context.Context) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	now := time.Now()
	if !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.qps)
	}
	l.last = now
	l.tokens-- // taken now, or reserved: later callers queue behind
	wait := time.Duration(-l.tokens / l.qps * float64(time.Second))
	l.mu.Unlock()
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// StatusError is an error response: its HTTP code and the API's Status.
type StatusError struct {
	Code    int
	Reason  string // "NotFound", "Conflict", "AlreadyExists", ...
	Message string
	Causes  []StatusCause
}

// StatusCause is one cause in a Status's details.
type StatusCause struct {
	Type    string `json:"reason"` // "FieldManagerConflict", "FieldValueInvalid", ...
	Message string `json:"message"`
	Field   string `json:"field"`
}

func (e *StatusError) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return fmt.Sprintf("the server answered %d %s", e.Code, e.Reason)
}

// reasons are the Status reasons of codes whose body is not a Status.
var reasons = map[int]string{
	400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
	406: "NotAcceptable", 409: "Conflict", 410: "Expired", 413: "RequestEntityTooLarge",
	415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
	503: "ServiceUnavailable", 504: "Timeout",
}

func newStatusError(code int, body []byte) *StatusError {
	var s struct {
		Kind    string `json:"kind"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
		Details *struct {
			Causes []StatusCause `json:"causes"`
		} `json:"details"`
	}
	e := &StatusError{Code: code}
	if json.Unmarshal(body, &s) == nil && s.Kind == "Status" {
		e.Reason, e.Message = s.Reason, s.Message
		if s.Details != nil {
			e.Causes = s.Details.Causes
		}
	} else if t := strings.TrimSpace(string(body)); t != "" {
		// Not the API server's own answer (a proxy's, a load balancer's).
		if len(t) > 200 {
			t = t[:200] + "..."
		}
		e.Message = fmt.Sprintf("the server answered %d: %s", code, t)
	}
	if e.Reason == "" {
		e.Reason = reasons[code]
	}
	return e
}

func reasonOf(err error) string {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Reason
	}
	return ""
}

// IsNotFound says the object does not exist.
func IsNotFound(err error) bool { return reasonOf(err) == "NotFound" }

// IsConflict says a precondition (resourceVersion, UID) or a server-side
// apply field ownership failed.
func IsConflict(err error) bool { return reasonOf(err) == "Conflict" }

// IsAlreadyExists says a created object's name is taken.
func IsAlreadyExists(err error) bool { return reasonOf(err) == "AlreadyExists" }

// IsForbidden says RBAC or an admission policy refused the request.
func IsForbidden(err error) bool { return reasonOf(err) == "Forbidden" }

// IsInvalid says the object failed validation.
func IsInvalid(err error) bool { return reasonOf(err) == "Invalid" }

// IsBadRequest says the request itself was malformed.
func IsBadRequest(err error) bool { return reasonOf(err) == "BadRequest" }
