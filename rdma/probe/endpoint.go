package probe

import (
	"context"
	"fmt"
	"net"

	"github.com/gpunode/gpunode/rdma/verbs"
)

// The steps both ends of a peer probe take to set up their RDMA endpoint.
// Each end wraps the errors in its own way: the client returns them, the
// server refuses with a code.

// localPort picks this end's port among devices: on device when it is
// set, else the port whose address conn leaves from or arrived on.
func localPort(ctx context.Context, devices Devices, device string, conn net.Conn) (Port, error) {
	devs, err := devices(ctx)
	if err != nil {
		return Port{}, err
	}
	var ip net.IP
	if la, ok := conn.LocalAddr().(*net.TCPAddr); ok && la != nil {
		ip = la.IP
	}
	return PortFor(devs, ip, device)
}

// openQP opens port's device and a queue pair on it. closeQP closes both,
// the queue pair first; calling it again does nothing more.
func openQP(port Port, cfg verbs.QPConfig) (qp *verbs.QP, closeQP func(), err error) {
	dev, err := verbs.OpenDevice(port.Device)
	if err != nil {
		return nil, nil, err
	}
	qp, err = dev.NewQP(cfg)
	if err != nil {
		dev.Close()
		return nil, nil, err
	}
	return qp, func() { qp.Close(); dev.Close() }, nil
}

// checkPeerBuffer refuses a peer whose buffer cannot hold what this
// end's configuration moves.
func checkPeerBuffer(remote verbs.Endpoint, cfg verbs.QPConfig) error {
	if remote.Len < uint64(cfg.BufferSize) {
		return fmt.Errorf("peer buffer of %d bytes is smaller than the request needs", remote.Len)
	}
	return nil
}

// connectQP connects qp to the peer's endpoint and, for SEND/RECV, posts
// the receives: they need a connected (at least INIT) QP, and must be
// posted before this end tells the other it is ready.
func connectQP(qp *verbs.QP, remote verbs.Endpoint, req Request) error {
	if err := qp.Connect(remote); err != nil {
		return err
	}
	if req.Kind == KindSendLat {
		return qp.PostRecv(req.Size)
	}
	return nil
}
