package probe

import (
	"math"
	"net"
	"testing"
	"time"
)

// The line-rate fraction divides by the slower end's data rate, and
// loopback, whose traffic never meets the link, has none.
func TestFinishLineRate(t *testing.T) {
	ndr := Port{Device: "mlx5_0", Port: 1, RateGbps: 400, DataRateGbps: 400}
	qdr := Port{Device: "mlx4_0", Port: 1, RateGbps: 40, DataRateGbps: 32}
	for name, c := range map[string]struct {
		local    Port
		peer     string
		peerGbps float64
		bytes    uint64
		want     float64
	}{
		"peer slower":       {ndr, "node-b", 200, 20e9, 0.8},
		"peer faster":       {qdr, "node-b", 400, 3.2e9, 0.8},
		"peer rate unknown": {ndr, "node-b", 0, 20e9, 0.4},
		"QDR data rate":     {qdr, "node-b", 0, 2e9, 0.5},
		"loopback":          {ndr, PeerLoopback, 0, 20e9, 0},
		"own rate unknown":  {Port{Device: "x"}, "node-b", 400, 20e9, 0},
	} {
		r := Result{Kind: KindWriteBW, Local: c.local, Peer: c.peer, PeerDataRateGbps: c.peerGbps, Bytes: c.bytes, Elapsed: time.Second}
		r.finish(1)
		if math.Abs(r.LineRateFraction-c.want) > 1e-9 {
			t.Errorf("%s: line rate fraction %v, want %v", name, r.LineRateFraction, c.want)
		}
	}
}

// The server says its port's data rate after the ack; a server from
// before that frame closes instead, and the client judges by its own
// port. (Frames decode strictly: the rate could not go in the accept
// without breaking clients from before it.)
func TestConcludePeerRate(t *testing.T) {
	for name, c := range map[string]struct {
		sendPort bool
		want     float64
	}{
		"server with the port frame": {true, 0.8},
		"server from before it":      {false, 0.2},
	} {
		client, server := net.Pipe()
		go func() {
			defer server.Close()
			var d done
			if err := expect(server, typeDone, &d); err != nil {
				t.Errorf("%s: server: %v", name, err)
				return
			}
			_ = writeFrame(server, typeAck, ack{})
			if c.sendPort {
				_ = writeFrame(server, typePort, portInfo{DataRateGbps: 100})
			}
		}()
		client.SetDeadline(time.Now().Add(5 * time.Second))
		res := Result{Kind: KindWriteBW, Local: Port{Device: "mlx5_0", Port: 1, DataRateGbps: 400}, Peer: "n2", Bytes: 10e9, Elapsed: time.Second}
		acks := make(chan serverEnd, 1)
		go func() {
			var e serverEnd
			e.err = expect(client, typeAck, &e.ack)
			acks <- e
		}()
		got, err := conclude(client, "n2", res, measured{cpu: time.Second, ack: acks})
		client.Close()
		if err != nil || math.Abs(got.LineRateFraction-c.want) > 1e-9 {
			t.Errorf("%s: %+v, %v; want line rate fraction %v", name, got, err, c.want)
		}
	}
}
