package probe

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpunode/gpunode/rdma/verbs"
)

func TestFrameRoundTrip(t *testing.T) {
	ep := verbs.Endpoint{QPN: 17, PSN: 0xabcdef, GID: [16]byte{10: 0xff, 11: 0xff, 12: 10, 15: 15}, Global: true, MTU: 3, Addr: 1 << 40, RKey: 99, Len: 65536}
	req := DefaultRequest(KindWriteBW)
	req.Nonce, req.MAC = bytes.Repeat([]byte{1}, 32), []byte{2, 3}
	for _, tc := range []struct {
		typ  byte
		in   any
		out  any
		want any
	}{
		{typeHello, hello{Nonce: []byte{1, 2}}, &hello{}, &hello{Nonce: []byte{1, 2}}},
		{typeRequest, req, &Request{}, &req},
		{typeAccept, accept{Endpoint: &ep, MAC: []byte{9}}, &accept{}, &accept{Endpoint: &ep, MAC: []byte{9}}},
		{typeError, RemoteError{Code: CodeBusy, Message: "x"}, &RemoteError{}, &RemoteError{Code: CodeBusy, Message: "x"}},
		{typeEndpoint, endpointMsg{Endpoint: ep}, &endpointMsg{}, &endpointMsg{Endpoint: ep}},
		{typeDone, done{Messages: 5, Bytes: 10, Elapsed: time.Second, Error: "e"}, &done{}, &done{Messages: 5, Bytes: 10, Elapsed: time.Second, Error: "e"}},
		{typeAck, ack{Error: "a"}, &ack{}, &ack{Error: "a"}},
	} {
		var buf bytes.Buffer
		if err := writeFrame(&buf, tc.typ, tc.in); err != nil {
			t.Fatal(err)
		}
		if err := expect(&buf, tc.typ, tc.out); err != nil {
			t.Fatalf("%s: %v", typeNames[tc.typ], err)
		}
		if got, want := mustJSON(t, tc.out), mustJSON(t, tc.want); got != want {
			t.Errorf("%s: got %s, want %s", typeNames[tc.typ], got, want)
		}
	}
	// An error frame where another was expected is the peer's error.
	var buf bytes.Buffer
	writeFrame(&buf, typeError, RemoteError{Code: CodeUnauthorized, Message: "wrong probe token"})
	err := expect(&buf, typeAccept, &accept{})
	if !IsUnauthorized(err) || !strings.Contains(err.Error(), "wrong probe token") {
		t.Errorf("error frame: %v", err)
	}
}

func mustJSON(t *testing.T, v any) string {
	var buf bytes.Buffer
	if err := writeFrame(&buf, typeAck, v); err != nil {
		t.Fatal(err)
	}
	return buf.String()[9:]
}

func header(magic string, version, typ byte, n uint32) []byte {
	b := append([]byte(magic), version, typ)
	return binary.BigEndian.AppendUint32(b, n)
}

func TestReadFrameGarbage(t *testing.T) {
	for name, tc := range map[string]struct {
		in   []byte
		want string
	}{
		"empty":           {nil, "read frame header"},
		"short header":    {[]byte("GNP\x01"), "read frame header"},
		"http":            {[]byte("GET / HTTP/1.1\r\n\r\n"), "bad magic"},
		"version 5":       {header("GNP", 5, typeHello, 2), "peer speaks version 5"},
		"version 0":       {header("GNP", 0, typeHello, 2), "peer speaks version 0"},
		"type 0":          {header("GNP", 1, 0, 2), "unknown frame type 0"},
		"type 200":        {header("GNP", 1, 200, 2), "unknown frame type 200"},
		"huge":            {header("GNP", 1, typeRequest, 1<<31), "exceeds"},
		"truncated":       {append(header("GNP", 1, typeHello, 10), "{}"...), "read hello frame"},
		"not json":        {append(header("GNP", 1, typeHello, 3), "abc"...), "decode hello"},
		"unknown field":   {append(header("GNP", 1, typeHello, 11), `{"evil":1}`+" "...), "unknown field"},
		"trailing":        {append(header("GNP", 1, typeHello, 4), "{}{}"...), "trailing data"},
		"wrong type":      {append(header("GNP", 1, typeAck, 2), "{}"...), "expected hello, got ack"},
		"error sans code": {append(header("GNP", 1, typeError, 2), "{}"...), "without a code"},
	} {
		err := expect(bytes.NewReader(tc.in), typeHello, &hello{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", name, err, tc.want)
		}
	}
}

// FuzzReadFrame: any bytes give a frame or an error, never a panic, and a
// frame that decodes re-encodes to a frame that decodes the same.
func FuzzReadFrame(f *testing.F) {
	var buf bytes.Buffer
	writeFrame(&buf, typeRequest, DefaultRequest(KindSendLat))
	f.Add(buf.Bytes())
	buf.Reset()
	writeFrame(&buf, typeAccept, accept{Endpoint: &verbs.Endpoint{QPN: 1}, MAC: []byte{1}})
	f.Add(buf.Bytes())
	f.Add(header("GNP", 1, typeDone, 0))
	f.Add([]byte("GNP\x01\x07\x00\x00\x00\x02{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := readFrame(bytes.NewReader(data))
		if err != nil {
			return
		}
		if len(fr.payload) > MaxFrame {
			t.Fatalf("payload of %d bytes accepted", len(fr.payload))
		}
		targets := map[byte]func() any{
			typeHello: func() any { return &hello{} }, typeRequest: func() any { return &Request{} },
			typeAccept: func() any { return &accept{} }, typeError: func() any { return &RemoteError{} },
			typeEndpoint: func() any { return &endpointMsg{} }, typeReady: func() any { return &ready{} },
			typeDone: func() any { return &done{} }, typeAck: func() any { return &ack{} },
		}
		v := targets[fr.typ]()
		if err := fr.decode(v); err != nil {
			return
		}
		if r, ok := v.(*Request); ok {
			_ = r.Validate() // must not panic on any values
		}
		var again bytes.Buffer
		if err := writeFrame(&again, fr.typ, v); err != nil {
			return // re-encoding may exceed MaxFrame (escaping)
		}
		w := targets[fr.typ]()
		if err := expect(&again, fr.typ, w); err != nil && fr.typ != typeError {
			t.Fatalf("re-encoded %s does not decode: %v", typeNames[fr.typ], err)
		}
	})
}

func TestRequestValidate(t *testing.T) {
	ok := DefaultRequest(KindWriteBW)
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Request){
		"kind":        func(r *Request) { r.Kind = "atomic_bw" },
		"wlat iters":  func(r *Request) { r.Kind = KindWriteLat; r.Iterations = verbs.MaxLatencyIterations + 1 },
		"qps":         func(r *Request) { r.QPs = verbs.MaxQPs + 1 },
		"qps memory":  func(r *Request) { r.QPs = 3; r.Size = verbs.MaxMessageSize },
		"qps lat":     func(r *Request) { r.Kind = KindSendLat; r.Iterations = 1000; r.QPs = 2 },
		"qps tcp":     func(r *Request) { r.Kind = KindTCPBW; r.QPs = 2 },
		"bidir lat":   func(r *Request) { r.Kind = KindWriteLat; r.Iterations = 1000; r.Bidirectional = true },
		"bidir tcp":   func(r *Request) { r.Kind = KindTCPBW; r.Bidirectional = true },
		"size 0":      func(r *Request) { r.Size = 0 },
		"size huge":   func(r *Request) { r.Size = verbs.MaxMessageSize + 1 },
		"iterations":  func(r *Request) { r.Iterations = 0 },
		"lat iters":   func(r *Request) { r.Kind = KindSendLat; r.Iterations = verbs.MaxLatencyIterations + 1 },
		"depth":       func(r *Request) { r.Depth = verbs.MaxDepth + 1 },
		"duration":    func(r *Request) { r.Duration = -time.Second },
		"long":        func(r *Request) { r.Duration = MaxDuration + 1 },
		"no timeout":  func(r *Request) { r.Timeout = 0 },
		"big timeout": func(r *Request) { r.Timeout = time.Hour },
	} {
		r := ok
		mut(&r)
		if err := r.Validate(); err == nil {
			t.Errorf("%s: accepted %+v", name, r)
		}
	}
}

func TestMACs(t *testing.T) {
	tok, nonce := []byte("0123456789abcdef"), bytes.Repeat([]byte{7}, 32)
	r := DefaultRequest(KindSendLat)
	m := requestMAC(tok, nonce, r)
	r.MAC = m
	if !bytes.Equal(requestMAC(tok, nonce, r), m) {
		t.Error("the MAC covers itself")
	}
	r2 := r
	r2.Iterations++
	if bytes.Equal(requestMAC(tok, nonce, r2), m) {
		t.Error("the MAC does not cover the request")
	}
	if bytes.Equal(requestMAC([]byte("0123456789abcdeF"), nonce, r), m) || bytes.Equal(requestMAC(tok, bytes.Repeat([]byte{8}, 32), r), m) {
		t.Error("the MAC does not depend on token and nonce")
	}
	if bytes.Equal(acceptMAC(tok, nonce, nonce), m) {
		t.Error("accept and request MACs coincide")
	}
}

func TestReadToken(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "token")
	os.WriteFile(good, []byte("  s3cr3t-s3cr3t-s3cr3t\n"), 0o600)
	if tok, err := ReadToken(good); err != nil || string(tok) != "s3cr3t-s3cr3t-s3cr3t" {
		t.Errorf("ReadToken = %q, %v", tok, err)
	}
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("abc\n"), 0o600)
	if _, err := ReadToken(short); err == nil || !strings.Contains(err.Error(), "at least 16") {
		t.Errorf("short token: %v", err)
	}
	if _, err := ReadToken(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file accepted")
	}
}
