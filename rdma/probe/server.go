package probe

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/gpunode/gpunode/rdma"
	"github.com/gpunode/gpunode/rdma/verbs"
)

// DefaultStepTimeout bounds each control step (a frame to read or write,
// connecting a QP) that is not the measurement itself.
const DefaultStepTimeout = 10 * time.Second

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
	// StepTimeout defaults to DefaultStepTimeout.
	StepTimeout time.Duration
}

func (s *Server) step() time.Duration {
	if s.StepTimeout > 0 {
		return s.StepTimeout
	}
	return DefaultStepTimeout
}

// Serve accepts connections until ctx ends or the listener fails, and
// waits for the connections it started.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if len(s.Token) < MinTokenBytes {
		return fmt.Errorf("probe server: token of %d bytes, at least %d needed", len(s.Token), MinTokenBytes)
	}
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
			if err := s.handle(ctx, conn); err != nil {
				s.Logger.Warn("probe from peer failed", "peer", conn.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// refuse answers with an error frame and returns err for the log.
func refuse(conn net.Conn, code string, err error) error {
	_ = writeFrame(conn, typeError, RemoteError{Code: code, Message: err.Error()})
	return fmt.Errorf("%s: %w", code, err)
}

func (s *Server) handle(ctx context.Context, conn net.Conn) error {
	step := s.step()
	conn.SetDeadline(time.Now().Add(step))
	nonce, err := newNonce()
	if err != nil {
		return err
	}
	if err := writeFrame(conn, typeHello, hello{Nonce: nonce}); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}
	var req Request
	if err := expect(conn, typeRequest, &req); err != nil {
		if errors.Is(err, errVersion) {
			return refuse(conn, CodeVersion, err)
		}
		return refuse(conn, CodeBadRequest, err)
	}
	// Authenticate before looking at anything else in the request.
	if !hmac.Equal(req.MAC, requestMAC(s.Token, nonce, req)) {
		return refuse(conn, CodeUnauthorized, errors.New("wrong probe token"))
	}
	if err := req.Validate(); err != nil {
		return refuse(conn, CodeBadRequest, err)
	}
	if len(req.Nonce) != nonceSize {
		return refuse(conn, CodeBadRequest, fmt.Errorf("client nonce of %d bytes, want %d", len(req.Nonce), nonceSize))
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
		if err := writeFrame(conn, typeAccept, accept{MAC: proof}); err != nil {
			return fmt.Errorf("send accept: %w", err)
		}
		conn.SetDeadline(time.Now().Add(req.Timeout + step))
		if err := tcpAnswer(conn, req); err != nil {
			return err
		}
		release()
		if err := writeFrame(conn, typeAck, ack{}); err != nil {
			return fmt.Errorf("send ack: %w", err)
		}
		log.Debug("answered TCP probe")
		return nil
	}

	if err := Available(); err != nil {
		return refuse(conn, CodeUnavailable, err)
	}
	devs, err := s.Devices(ctx)
	if err != nil {
		return refuse(conn, CodeUnavailable, err)
	}
	local, _ := conn.LocalAddr().(*net.TCPAddr)
	var ip net.IP
	if local != nil {
		ip = local.IP
	}
	port, err := PortFor(devs, ip, s.Device)
	if err != nil {
		return refuse(conn, CodeUnavailable, err)
	}
	dev, err := verbs.OpenDevice(port.Device)
	if err != nil {
		return refuse(conn, CodeUnavailable, err)
	}
	defer dev.Close()
	qp, err := dev.NewQP(qpConfig(port, req))
	if err != nil {
		return refuse(conn, CodeUnavailable, err)
	}
	defer qp.Close()
	ep := qp.Local()
	if err := writeFrame(conn, typeAccept, accept{Endpoint: &ep, MAC: proof}); err != nil {
		return fmt.Errorf("send accept: %w", err)
	}
	var remote endpointMsg
	if err := expect(conn, typeEndpoint, &remote); err != nil {
		return fmt.Errorf("read endpoint: %w", err)
	}
	if remote.Endpoint.Len < uint64(qpConfig(port, req).BufferSize) {
		return refuse(conn, CodeBadRequest, fmt.Errorf("peer buffer of %d bytes is smaller than the request needs", remote.Endpoint.Len))
	}
	if err := qp.Connect(remote.Endpoint); err != nil {
		return refuse(conn, CodeFailed, err)
	}
	// Receives need a connected (at least INIT) QP, and must be posted
	// before ready lets the client send.
	if req.Kind == KindSendLat {
		if err := qp.PostRecv(req.Size); err != nil {
			return refuse(conn, CodeFailed, err)
		}
	}
	if err := writeFrame(conn, typeReady, ready{}); err != nil {
		return fmt.Errorf("send ready: %w", err)
	}
	conn.SetDeadline(time.Now().Add(req.Timeout + step))
	log = log.With("device", port.Name())

	// The measurement: for WRITE this end is passive and only waits for
	// the client's done; for SEND/RECV it answers pings while a reader
	// watches the connection, so a client that dies cancels the loop.
	var pongErr error
	var got done
	var readErr error
	if req.Kind == KindSendLat {
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			readErr = expect(conn, typeDone, &got)
			if readErr != nil {
				qp.Cancel()
			}
		}()
		pongErr = pong(qp, req, req.Timeout)
		<-readDone
	} else {
		readErr = expect(conn, typeDone, &got)
	}
	if readErr != nil {
		return fmt.Errorf("peer went away mid-probe: %w", readErr)
	}
	a := ack{}
	if pongErr != nil {
		a.Error = pongErr.Error()
	}
	qp.Close()
	dev.Close()
	release()
	if err := writeFrame(conn, typeAck, a); err != nil {
		return fmt.Errorf("send ack: %w", err)
	}
	if got.Error != "" || pongErr != nil {
		return fmt.Errorf("probe failed: client: %q, server: %v", got.Error, pongErr)
	}
	log.Debug("answered RDMA probe", "bytes", got.Bytes, "elapsed", got.Elapsed)
	return nil
}

func pong(qp *verbs.QP, req Request, timeout time.Duration) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return qp.Pong(req.Size, req.Iterations, timeout)
}
