package probe

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// perftest's other tests go out as protocol version 3, and only they: an
// agent from before them still answers everything else, and refuses them
// with a version error that names what needs the upgrade. One queue pair
// asked for explicitly is what every version runs, so it stays version 1.
func TestKindsAgainstAnOlderPeer(t *testing.T) {
	addr, versions := oldServer(t)
	c := client(testToken)
	base := DefaultRequest(KindWriteBW)
	base.Timeout = 5 * time.Second
	one := base
	one.QPs = 1
	if _, err := c.Run(context.Background(), addr, one); !IsBusy(err) {
		t.Errorf("one queue pair to an old peer: %v, want its busy answer", err)
	}
	if v := <-versions; v != 1 {
		t.Errorf("one queue pair was sent as version %d", v)
	}
	for name, set := range map[string]func(*Request){
		"read_bw":   func(r *Request) { *r = DefaultRequest(KindReadBW); r.Timeout = 5 * time.Second },
		"write_lat": func(r *Request) { *r = DefaultRequest(KindWriteLat); r.Timeout = 5 * time.Second },
		"qps":       func(r *Request) { r.QPs = 2 },
		"bidir":     func(r *Request) { r.Bidirectional = true },
	} {
		r := base
		set(&r)
		_, err := c.Run(context.Background(), addr, r)
		if v := <-versions; v != 3 {
			t.Errorf("%s was sent as version %d", name, v)
		}
		if !IsVersion(err) || !strings.Contains(err.Error(), "predates protocol version 3: read_bw, write_lat") {
			t.Errorf("%s to an old peer: %v", name, err)
		}
	}
}

// A server reads version 3 requests, authenticates them and goes on to
// the RDMA kinds (refused here as unavailable: this machine has no RDMA),
// not refusing them as a version or a request it could not read.
func TestServerReadsKindRequests(t *testing.T) {
	addr := startServer(t, NewLimiter())
	for _, kind := range []string{KindReadBW, KindWriteLat, KindWriteBW} {
		req := DefaultRequest(kind)
		req.Timeout = 5 * time.Second
		if kind == KindWriteBW {
			req.QPs, req.Bidirectional = 4, true
		}
		_, err := client(testToken).Run(context.Background(), addr, req)
		var re *RemoteError
		if !errors.As(err, &re) || re.Code != CodeUnavailable {
			t.Errorf("%+v to a server without RDMA: %v", req, err)
		}
	}
}

// The new kinds' defaults are perftest's (ib_read_bw's as ib_write_bw's,
// ib_write_lat's as ib_send_lat's), and their queue pairs are sized for
// them: READs in flight as the device allows, a send and a receive half
// for the write ping-pong.
func TestKindDefaults(t *testing.T) {
	rb, wl := DefaultRequest(KindReadBW), DefaultRequest(KindWriteLat)
	if rb.Size != 65536 || rb.Iterations != 5000 || rb.Depth != 128 || wl.Size != 2 || wl.Iterations != 1000 || wl.Depth != 1 {
		t.Errorf("defaults: read_bw %+v, write_lat %+v", rb, wl)
	}
	p := Port{Port: 1, GIDIndex: 3}
	if c := qpConfig(p, rb); !c.Reads || c.BufferSize != 65536 {
		t.Errorf("read_bw QP %+v", c)
	}
	if c := qpConfig(p, wl); c.Reads || c.BufferSize != 4 || c.Depth != 64 {
		t.Errorf("write_lat QP %+v", c)
	}
	if c := qpConfig(p, DefaultRequest(KindWriteBW)); c.Reads {
		t.Errorf("write_bw QP %+v asks for READs", c)
	}
}
