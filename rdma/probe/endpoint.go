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

// openQPs opens port's device and n queue pairs on it. closeQPs closes
// them, then the device; calling it again does nothing more.
func openQPs(port Port, cfg verbs.QPConfig, n int) (qps qpSet, closeQPs func(), err error) {
	dev, err := verbs.OpenDevice(port.Device)
	if err != nil {
		return nil, nil, err
	}
	qps, err = newQPs(dev, cfg, n)
	if err != nil {
		dev.Close()
		return nil, nil, err
	}
	return qps, func() { qps.close(); dev.Close() }, nil
}

// checkPeers refuses a peer that offers another number of queue pairs
// than this end has, or a buffer that cannot hold what this end's
// configuration moves.
func checkPeers(remotes []verbs.Endpoint, cfg verbs.QPConfig, n int) error {
	if len(remotes) != n {
		return fmt.Errorf("peer offered %d queue pairs, the request needs %d", len(remotes), n)
	}
	for _, r := range remotes {
		if err := checkPeerBuffer(r, cfg); err != nil {
			return err
		}
	}
	return nil
}

// connectQPs connects each of this end's queue pairs to the peer's of the
// same index (checkPeers checked they match).
func connectQPs(qps qpSet, remotes []verbs.Endpoint, req Request) error {
	for i, q := range qps {
		if err := connectQP(q, remotes[i], req); err != nil {
			return err
		}
	}
	return nil
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
