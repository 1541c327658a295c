package exporters

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/exporter-toolkit/web"
)

// Health answers the health endpoints. Both are called per request and
// must not block.
type Health struct {
	// Live returns nil while the agent's main loop is making progress.
	Live func() error
	// Ready returns nil once the first discovery has completed.
	Ready func() error
}

// NewRegistry returns a registry with the Go and process collectors and the
// given collectors.
func NewRegistry(cs ...prometheus.Collector) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	all := append([]prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}, cs...)
	for _, c := range all {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register collector: %w", err)
		}
	}
	return reg, nil
}

// NewHandler serves /metrics, /healthz, /readyz and a landing page at /.
// /metrics is the registry, gathered on every scrape, followed by the
// parts, each re-encoded only when it changes (see Part).
func NewHandler(reg *prometheus.Registry, h Health, version string, logger *slog.Logger, parts ...*Part) (http.Handler, error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", &metricsHandler{inflight: make(chan struct{}, maxScrapesInFlight), reg: reg, parts: parts, logger: logger})
	mux.Handle("/healthz", healthHandler(h.Live))
	mux.Handle("/readyz", healthHandler(h.Ready))
	landing, err := web.NewLandingPage(web.LandingConfig{
		Name:        "gpunode-agent",
		Description: "GPU inference node agent: discovery, labels, tuning, RDMA probes and metrics",
		Version:     version,
		Links: []web.LandingLinks{
			{Address: "/metrics", Text: "Metrics"},
			{Address: "/healthz", Text: "Liveness"},
			{Address: "/readyz", Text: "Readiness"},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("landing page: %w", err)
	}
	mux.Handle("/", landing)
	return mux, nil
}

// NewHealthHandler serves /healthz and /readyz only: what the kubelet's
// probes need, with nothing that asks for authentication.
func NewHealthHandler(h Health) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/healthz", healthHandler(h.Live))
	mux.Handle("/readyz", healthHandler(h.Ready))
	return mux
}

func healthHandler(check func() error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := check(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, err)
			return
		}
		fmt.Fprintln(w, "ok")
	})
}

// Server is the metrics and health HTTP server.
type Server struct {
	srv      *http.Server
	listener net.Listener
	webCfg   *frozenWebConfig // nil without a web config
	logger   *slog.Logger
}

// Listen binds the address now, so a port conflict is reported at start-up
// rather than from a goroutine. webConfigFile (TLS, basic auth) may be empty.
// The web config is read once, here (see freezeWebConfig).
func Listen(addr, webConfigFile string, handler http.Handler, logger *slog.Logger) (*Server, error) {
	var webCfg *frozenWebConfig
	if webConfigFile != "" {
		if err := ValidateWebConfig(webConfigFile); err != nil {
			return nil, err
		}
		var err error
		if webCfg, err = freezeWebConfig(webConfigFile); err != nil {
			return nil, err
		}
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		if webCfg != nil {
			webCfg.Close()
		}
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return &Server{
		srv: &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      60 * time.Second,
			IdleTimeout:       2 * time.Minute,
			// Handshake failures from port scanners are noise, not errors.
			ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
		},
		listener: l,
		webCfg:   webCfg,
		logger:   logger,
	}, nil
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() net.Addr { return s.listener.Addr() }

// Serve serves until Shutdown; it returns nil after a clean shutdown.
func (s *Server) Serve() error {
	path := ""
	if s.webCfg != nil {
		path = s.webCfg.Path()
	}
	err := web.Serve(s.listener, s.srv, &web.FlagConfig{WebConfigFile: &path}, s.logger)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close releases a server that never served.
func (s *Server) Close() error { return errors.Join(s.listener.Close(), s.closeWebConfig()) }

// Shutdown stops accepting connections and waits for in-flight requests.
func (s *Server) Shutdown(ctx context.Context) error {
	return errors.Join(s.srv.Shutdown(ctx), s.closeWebConfig())
}

func (s *Server) closeWebConfig() error {
	if s.webCfg == nil {
		return nil
	}
	c := s.webCfg
	s.webCfg = nil
	return c.Close()
}
