package probe

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/rdma/verbs"
)

// DefaultStepTimeout bounds each control step (a frame to read or write,
// connecting a QP) that is not the measurement itself.
const DefaultStepTimeout = 10 * time.Second

// stepTimeout is d, or DefaultStepTimeout when d is not set.
func stepTimeout(d time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return DefaultStepTimeout
}

// Devices discovers this node's RDMA devices (rdma.Discover on the host
// root), called per probe so a port that came up or went down counts.
type Devices func(ctx context.Context) ([]rdma.Device, error)

// Server answers other agents' probes, one at a time.
type Server struct {
	Token   []byte
	Devices Devices
	// Device restricts the ports used to one device; empty picks the
	// port whose address the connection arrived on.
	Device  string
	Limiter *Limiter
	Logger  *slog.Logger
	// GPU picks the GPU whose memory answers a GPU memory probe on port
	// (the one nearest it); nil refuses such probes as unavailable.
	GPU func(port Port) (*GPUTarget, error)
	// StepTimeout defaults to DefaultStepTimeout.
	StepTimeout time.Duration
	// Refused counts the connections refused before the peer
	// authenticated, for the metrics; nil counts them privately.
	Refused *Refusals
	// RefusalLogInterval is the least time between two log lines about
	// such refusals; DefaultRefusalLogInterval when not set.
	RefusalLogInterval time.Duration
}

func (s *Server) step() time.Duration {
	return stepTimeout(s.StepTimeout)
}

// Serve accepts connections until ctx ends or the listener fails, and
// waits for the connections it started.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if len(s.Token) < MinTokenBytes {
		return fmt.Errorf("probe server: token of %d bytes, at least %d needed", len(s.Token), MinTokenBytes)
	}
	refused := s.Refused
	if refused == nil {
		refused = &Refusals{}
	}
	refusals := newRefusalLog(s.Logger, s.RefusalLogInterval)
	defer refusals.stop() // after the connections, to log their count
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("probe server: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			stopConn := context.AfterFunc(ctx, func() { conn.Close() })
			defer stopConn()
			err := s.handle(ctx, conn)
			var un *unauthenticated
			switch {
			case errors.As(err, &un):
				refused.counter(un.code).Add(1)
				refusals.refused(un.code, conn.RemoteAddr().String(), un.err)
			case err != nil:
				s.Logger.Warn("probe from peer failed", "peer", conn.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// refuse answers an authenticated peer with an error frame, with the
// details, and returns err for the log.
func refuse(conn net.Conn, code string, err error) error {
	_ = writeFrame(conn, typeError, RemoteError{Code: code, Message: err.Error()})
	return fmt.Errorf("%s: %w", code, err)
}

// unauthenticated is the refusal of a peer that has not proved it holds
// the token: counted and logged sampled, not once each.
type unauthenticated struct {
	code string
	err  error
}

func (e *unauthenticated) Error() string { return e.code + ": " + e.err.Error() }
func (e *unauthenticated) Unwrap() error { return e.err }

// refuseUnauthenticated answers with the code only: the peer learns
// nothing of why its request did not parse.
func refuseUnauthenticated(conn net.Conn, code string, err error) error {
	_ = writeFrame(conn, typeError, RemoteError{Code: code})
	return &unauthenticated{code: code, err: err}
}

// handle answers one probe: the handshake, then the TCP or RDMA kind.
func (s *Server) handle(ctx context.Context, conn net.Conn) error {
	conn.SetDeadline(time.Now().Add(s.step()))
	req, nonce, err := s.handshake(conn)
	if err != nil {
		return err
	}
	if !s.Limiter.TryAcquire() {
		return refuse(conn, CodeBusy, ErrBusy)
	}
	// Released before the final ack, so a client may start its next
	// probe as soon as it has the answer.
	release := sync.OnceFunc(s.Limiter.Release)
	defer release()
	proof := acceptMAC(s.Token, nonce, req.Nonce)
	log := s.Logger.With("peer", conn.RemoteAddr().String(), "kind", req.Kind)
	if !isRDMA(req.Kind) {
		return s.answerTCP(conn, req, proof, release, log)
	}
	return s.answerRDMA(ctx, conn, req, proof, release, log)
}

// handshake challenges the client with a nonce and reads its request,
// authenticating it before looking at anything else in it. It returns
// the request and the challenge; a refusal has been sent when it fails.
func (s *Server) handshake(conn net.Conn) (Request, []byte, error) {
	nonce, err := newNonce()
	if err != nil {
		return Request{}, nil, err
	}
	if err := writeFrame(conn, typeHello, hello{Nonce: nonce}); err != nil {
		return Request{}, nil, &unauthenticated{code: CodeBadRequest, err: fmt.Errorf("send hello: %w", err)}
	}
	var req Request
	if err := expect(conn, typeRequest, &req); err != nil {
		if errors.Is(err, errVersion) {
			return Request{}, nil, refuseUnauthenticated(conn, CodeVersion, err)
		}
		return Request{}, nil, refuseUnauthenticated(conn, CodeBadRequest, err)
	}
	if !hmac.Equal(req.MAC, requestMAC(s.Token, nonce, req)) {
		return Request{}, nil, refuseUnauthenticated(conn, CodeUnauthorized, errors.New("wrong probe token"))
	}
	// Authenticated from here: refusals say why.
	if err := req.Validate(); err != nil {
		return Request{}, nil, refuse(conn, CodeBadRequest, err)
	}
	if len(req.Nonce) != nonceSize {
		return Request{}, nil, refuse(conn, CodeBadRequest, fmt.Errorf("client nonce of %d bytes, want %d", len(req.Nonce), nonceSize))
	}
	return req, nonce, nil
}

// answerTCP accepts a TCP kind and answers it on the control connection.
func (s *Server) answerTCP(conn net.Conn, req Request, proof []byte, release func(), log *slog.Logger) error {
	if err := writeFrame(conn, typeAccept, accept{MAC: proof}); err != nil {
		return fmt.Errorf("send accept: %w", err)
	}
	conn.SetDeadline(time.Now().Add(req.Timeout + s.step()))
	var err error
	cpu := onThread(func() { err = tcpAnswer(conn, req) })
	if err != nil {
		return err
	}
	release()
	if err := writeFrame(conn, typeAck, ack{CPU: cpu}); err != nil {
		return fmt.Errorf("send ack: %w", err)
	}
	log.Debug("answered TCP probe")
	return nil
}

// answerRDMA opens a queue pair on this end's port, connects it to the
// client's, takes part in the measurement and exchanges the outcomes.
func (s *Server) answerRDMA(ctx context.Context, conn net.Conn, req Request, proof []byte, release func(), log *slog.Logger) error {
	// The slot is freed before a refusal is written: a client that reads
	// it may ask again at once and must not be told "busy".
	refuseWith := func(code string, err error) error {
		release()
		return refuse(conn, code, err)
	}
	unavailable := func(err error) error { return refuseWith(CodeUnavailable, err) }
	if err := Available(); err != nil {
		return unavailable(fmt.Errorf("this node has no RDMA (%w); it answers the TCP kinds only", err))
	}
	port, err := s.port(ctx, conn, req)
	if err != nil {
		return unavailable(err)
	}
	cfg := qpConfig(port, req)
	var g *GPUTarget
	if req.Memory == verbs.MemoryGPU {
		if g, err = s.gpu(port); err != nil {
			return refuseWith(CodeNoGPU, err)
		}
		cfgs, releaseGPU, err := gpuBuffers(g, cfg)
		if errors.Is(err, ErrGPUNotAvailable) {
			return refuseWith(CodeNoGPU, err)
		}
		if err != nil {
			return unavailable(err)
		}
		defer releaseGPU() // after the QPs, deferred below, are closed
		cfg = cfgs[0]
	}
	qps, closeQPs, err := openQPs(port, cfg, numQPs(req))
	if err != nil {
		return unavailable(err)
	}
	defer closeQPs()
	if cfg.GPU != nil {
		r := gpuResult(*g, qps[0], cfg.GPU)
		log = log.With("gpu", r.PCIBusID, "gpu_path", r.Path, "dmabuf_unavailable", r.DMABuf)
	}
	free := func() { closeQPs(); release() }
	remotes, err := exchangeEndpoints(conn, qps, cfg, req, port, proof, free)
	if err != nil {
		return err
	}
	conn.SetDeadline(time.Now().Add(req.Timeout + s.step()))
	return s.measure(conn, qps, remotes, req, portInfo{DataRateGbps: port.DataRateGbps}, closeQPs, release, log.With("device", port.Name()))
}

// gpu is the GPU that answers GPU memory probes on port.
func (s *Server) gpu(port Port) (*GPUTarget, error) {
	if s.GPU == nil {
		return nil, fmt.Errorf("this agent answers no GPU memory probes on %s (it knows no GPUs)", port.Name())
	}
	return s.GPU(port)
}

// port is this end's port for req: its port on the client's rail when
// the request names one (Device does not restrict that choice), else the
// port the connection arrived on (or on Device).
func (s *Server) port(ctx context.Context, conn net.Conn, req Request) (Port, error) {
	if req.Rail == nil {
		return localPort(ctx, s.Devices, s.Device, conn)
	}
	devs, err := s.Devices(ctx)
	if err != nil {
		return Port{}, err
	}
	r, err := MatchRail(Rails(devs, railRuleFor(*req.Rail)), *req.Rail)
	if err != nil {
		return Port{}, fmt.Errorf("rail %d: %w", req.Rail.Index, err)
	}
	return r.Port, nil
}

// measure is the server's part once its QP is ready: the measurement
// and the outcomes; closeQP and release free the QP and the probe slot
// before the final ack.
func (s *Server) measure(conn net.Conn, qp responder, remotes []verbs.Endpoint, req Request, pi portInfo, closeQP, release func(), log *slog.Logger) error {
	m := answerWatched(conn, qp, remotes, req)
	if m.readErr != nil {
		return fmt.Errorf("peer went away mid-probe: %w", m.readErr)
	}
	a := ack{CPU: m.cpu}
	if m.pongErr != nil {
		a.Error = m.pongErr.Error()
	} else if req.Bidirectional {
		a.Result = &done{Messages: m.bw.Messages, Bytes: m.bw.Bytes, Elapsed: m.bw.Elapsed}
	}
	closeQP()
	release()
	if !m.acked {
		if err := writeFrame(conn, typeAck, a); err != nil {
			return fmt.Errorf("send ack: %w", err)
		}
	}
	if a.Error == "" {
		// Clients from before the port frame have closed already.
		_ = writeFrame(conn, typePort, pi)
	}
	if m.got.Error != "" || m.pongErr != nil {
		return fmt.Errorf("probe failed: client: %q, server: %v", m.got.Error, m.pongErr)
	}
	log.Debug("answered RDMA probe", "bytes", m.got.Bytes, "elapsed", m.got.Elapsed, "cpu", m.cpu)
	return nil
}

// exchangeEndpoints offers qps in the accept, connects them to the
// client's endpoints and says ready; it returns the client's endpoints.
// A refusal has been sent when it fails where the protocol still allows
// one, after free has let go of the QPs and the probe slot.
func exchangeEndpoints(conn net.Conn, qps qpSet, cfg verbs.QPConfig, req Request, port Port, proof []byte, free func()) ([]verbs.Endpoint, error) {
	eps := qps.endpoints()
	acc := accept{Endpoint: &eps[0], MoreEndpoints: eps[1:], MAC: proof}
	if req.Rail != nil {
		acc.Port = &port
	}
	if err := writeFrameV(conn, req.version(), typeAccept, acc); err != nil {
		return nil, fmt.Errorf("send accept: %w", err)
	}
	var remote endpointMsg
	if err := expect(conn, typeEndpoint, &remote); err != nil {
		return nil, fmt.Errorf("read endpoint: %w", err)
	}
	remotes := append([]verbs.Endpoint{remote.Endpoint}, remote.MoreEndpoints...)
	if err := checkPeers(remotes, cfg, len(qps)); err != nil {
		free()
		return nil, refuse(conn, CodeBadRequest, err)
	}
	if err := connectQPs(qps, remotes, req); err != nil {
		free()
		return nil, refuse(conn, CodeFailed, err)
	}
	if err := writeFrame(conn, typeReady, ready{}); err != nil {
		return nil, fmt.Errorf("send ready: %w", err)
	}
	return remotes, nil
}

// answered is the server end's view of a measurement.
type answered struct {
	got     done     // the client's outcome
	readErr error    // reading it failed: the client went away
	pongErr error    // this end's loop failed
	bw      verbs.BW // this end's loop's outcome, bidirectional
	cpu     time.Duration
	acked   bool // the ack went out before done, with pongErr
}

// answerWatched is this end's part of the measurement: for the bandwidth
// kinds it is passive and only waits for the client's done; for the
// latency kinds it answers pings, and for a bidirectional probe it runs
// the bandwidth loop toward the client, while a reader watches the
// connection. The client's done, with an
// error or none at all (it died), cancels the loop: without pings it would
// poll until the timeout, holding the node's probe slot. When the loop
// fails first, the ack goes out at once so that the client stops too.
func answerWatched(conn net.Conn, qp responder, remotes []verbs.Endpoint, req Request) answered {
	var m answered
	if isBandwidth(req.Kind) && !req.Bidirectional {
		m.readErr = expect(conn, typeDone, &m.got)
		return m
	}
	var clientEnded atomic.Bool
	readDone := make(chan struct{})
	var got done
	var readErr error
	go func() {
		defer close(readDone)
		readErr = expect(conn, typeDone, &got)
		if readErr != nil || got.Error != "" {
			clientEnded.Store(true)
			qp.Cancel()
		}
	}()
	if isBandwidth(req.Kind) {
		m.bw, m.cpu, m.pongErr = bandwidth(qp, remotes, req, req.Timeout)
	} else {
		m.cpu, m.pongErr = pong(qp, remotes[0], req, req.Timeout)
	}
	if m.pongErr != nil && !clientEnded.Load() {
		// A write error surfaces as the client's; its done still comes
		// or its connection closes, which the reader sees.
		_ = writeFrame(conn, typeAck, ack{Error: m.pongErr.Error(), CPU: m.cpu})
		m.acked = true
	}
	<-readDone
	m.got, m.readErr = got, readErr
	return m
}
