package probe

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gpunode/gpunode/rdma/verbs"
)

// The control channel is a TCP connection carrying frames:
//
//	"GNP" | version (1 byte) | type (1 byte) | length (uint32, big endian) | JSON payload
//
// One exchange per connection:
//
//	server: hello{nonce}                      challenge
//	client: request{kind, sizes, nonce, mac}  mac = HMAC-SHA256(token, server nonce, request)
//	server: accept{endpoint, mac} | error     mac proves the server knows the token too
//	client: endpoint{endpoint}                (RDMA kinds) its QP
//	server: ready                             its QP is connected, receives posted
//	        ... the measurement (RDMA, or TCP bytes on this connection) ...
//	client: done{result}                      an error in it ends the server's loop
//	server: ack{error, cpu}                   the server end's outcome and CPU time
//	server: port{data rate}                   (RDMA kinds, after a clean ack) its port, so
//	                                          the client judges bandwidth by the slower end
//
// A server whose SEND/RECV loop fails sends its ack at once, before done:
// the client's pings would otherwise wait for replies until the timeout.
// Either way each end's loop stops as soon as the other's has failed, so
// neither holds its node's probe slot for the rest of the timeout.
//
// Version 2 adds rails: a request may name the client's rail (Request.Rail)
// and the accept then names the server's port on it (accept.Port); and a
// service level and traffic class. A client sends a request as version 2
// only when it uses any of these, and a
// server answers such a request in version 2; everything else stays
// version 1, so agents of either version probe each other as before. A
// version 1 server refuses a version 2 request with the code version,
// which the client reports as a peer that predates per-rail probes.
//
// Version 3 adds perftest's other tests: the kinds read_bw and write_lat,
// several queue pairs per probe (Request.QPs: the accept and the
// client's endpoint frame then carry the further QPs' endpoints in
// more_endpoints) and bidirectional bandwidth (Request.Bidirectional: the
// server runs the same loop toward the client, and its ack carries that
// direction's outcome in result). For read_bw each endpoint says how many
// RDMA READs it takes in flight (out_reads). As with version 2, a client
// sends version 3 only for a request that uses any of these, and the
// server answers it in version 3; an older server refuses it with the
// code version.
// Version 4 adds GPU memory: a request with memory gpu (Request.Memory)
// asks the server to put its buffer in the GPU nearest its port. Only
// such requests are version 4, so a server before it refuses them with
// the code version, which the client reports as a peer that predates GPU
// memory probes, and probes everything else as before.
//
// The port frame comes last so that a client that does not expect it
// reads the ack and closes, and a client expecting it from a server that
// does not send it gets the server's close instead. Frames decode
// strictly, so fields are added in new frames, never in old ones: the
// ack's cpu field is the exception, added before any release.
const (
	// Version is the newest protocol version; a frame of a version
	// outside MinVersion..Version is refused with an error naming both.
	Version = 4
	// MinVersion is the oldest version this agent still speaks.
	MinVersion = 1
	// versionRails is the first version with rails.
	versionRails = 2
	// versionKinds is the first version with read_bw, write_lat, several
	// QPs and bidirectional bandwidth.
	versionKinds = 3
	// versionGPU is the first version with GPU memory.
	versionGPU = 4
	// MaxFrame bounds a payload: messages are small.
	MaxFrame = 16 << 10
)

var magic = [3]byte{'G', 'N', 'P'}

// Frame types.
const (
	typeHello byte = iota + 1
	typeRequest
	typeAccept
	typeError
	typeEndpoint
	typeReady
	typeDone
	typeAck
	typePort
)

var typeNames = map[byte]string{
	typeHello: "hello", typeRequest: "request", typeAccept: "accept", typeError: "error",
	typeEndpoint: "endpoint", typeReady: "ready", typeDone: "done", typeAck: "ack", typePort: "port",
}

// Kinds of probes.
const (
	KindWriteBW = "write_bw"
	KindSendLat = "send_lat"
	// KindReadBW is RDMA READ bandwidth (ib_read_bw), KindWriteLat RDMA
	// WRITE latency (ib_write_lat): protocol version 3.
	KindReadBW   = "read_bw"
	KindWriteLat = "write_lat"
	KindTCPBW    = "tcp_bw"
	KindTCPLat   = "tcp_lat"
)

// Error codes a server answers with.
const (
	CodeUnauthorized = "unauthorized"
	CodeBusy         = "busy"
	CodeBadRequest   = "bad_request"
	CodeUnavailable  = "unavailable"
	CodeFailed       = "failed"
	CodeVersion      = "version"
	// CodeNoGPU answers a GPU memory probe (version 4) on a port no GPU of
	// the server's node may answer from: none is nearest it, the agent
	// touches no GPU memory, or it cannot reach that GPU's memory at all
	// (an AMD GPU without ROCm). It is the peer's inventory, not a fault.
	CodeNoGPU = "no_gpu"
)

type hello struct {
	Nonce []byte `json:"nonce"`
}

// Request is what a client asks a server to take part in.
type Request struct {
	Kind       string `json:"kind"`
	Size       int    `json:"size"`
	Iterations int    `json:"iterations"`
	// Duration > 0 runs the bandwidth kinds for that long instead of
	// Iterations (then an upper bound).
	Duration time.Duration `json:"duration_ns,omitempty"`
	Depth    int           `json:"depth"`
	// Timeout bounds the measurement; the server caps it.
	Timeout time.Duration `json:"timeout_ns"`
	// Rail, when set, names the client's rail: the server answers on its
	// port of the same rail (protocol version 2).
	Rail *RailRequest `json:"rail,omitempty"`
	// ServiceLevel (0-15) and TrafficClass (0-255) set both ends' QPs'
	// class (protocol version 2 when not 0).
	ServiceLevel int `json:"service_level,omitempty"`
	TrafficClass int `json:"traffic_class,omitempty"`
	// QPs > 1 runs a bandwidth kind over that many queue pairs at once
	// (perftest -q), Bidirectional both ways at once (perftest -b):
	// protocol version 3.
	QPs           int    `json:"qps,omitempty"`
	Bidirectional bool   `json:"bidirectional,omitempty"`
	Nonce         []byte `json:"nonce,omitempty"`
	MAC           []byte `json:"mac,omitempty"`

	// Memory is where the buffers live: verbs.MemoryHost ("" too) or
	// verbs.MemoryGPU (protocol version 4): this end's on GPU, which the
	// caller chooses (never sent), the server's on the GPU nearest its
	// port.
	Memory string     `json:"memory,omitempty"`
	GPU    *GPUTarget `json:"-"`
}

type accept struct {
	Endpoint *verbs.Endpoint `json:"endpoint,omitempty"`
	// Port is the server's port on the requested rail (version 2, only
	// in answer to a request that names a rail).
	Port *Port `json:"port,omitempty"`
	// MoreEndpoints are the server's further QPs (Request.QPs > 1,
	// version 3).
	MoreEndpoints []verbs.Endpoint `json:"more_endpoints,omitempty"`
	MAC           []byte           `json:"mac"`
}

// RemoteError is a server's refusal or failure, with its code.
type RemoteError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// codeText says what a code without a message means: a server answers a
// peer that has not authenticated with the code only.
var codeText = map[string]string{
	CodeUnauthorized: "the peer refused this agent's probe token",
	CodeBadRequest:   "the peer could not read the request",
	CodeVersion:      "the peer speaks another protocol version",
}

func (e *RemoteError) Error() string {
	if e.Message == "" {
		if t, ok := codeText[e.Code]; ok {
			return "peer: " + e.Code + ": " + t
		}
		return "peer: " + e.Code
	}
	return "peer: " + e.Code + ": " + e.Message
}

type endpointMsg struct {
	Endpoint verbs.Endpoint `json:"endpoint"`
	// MoreEndpoints are the client's further QPs (version 3).
	MoreEndpoints []verbs.Endpoint `json:"more_endpoints,omitempty"`
}

type ready struct{}

type done struct {
	Messages uint64        `json:"messages"`
	Bytes    uint64        `json:"bytes"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	Error    string        `json:"error,omitempty"`
}

type ack struct {
	Error string `json:"error,omitempty"`
	// CPU is the server's probe thread's CPU time in the measurement
	// (none when it ran no loop: the target of RDMA WRITE).
	CPU time.Duration `json:"cpu_ns,omitempty"`
	// Result is the server's own loop's outcome in a bidirectional
	// probe (version 3): the direction toward the client.
	Result *done `json:"result,omitempty"`
}

// portInfo is what the server says of its port after the ack.
type portInfo struct {
	DataRateGbps float64 `json:"data_rate_gbps"`
}

// Validate checks a request against the limits that bound a probe's
// memory and time.
func (r Request) Validate() error {
	switch r.Kind {
	case KindWriteBW, KindSendLat, KindTCPBW, KindTCPLat, KindReadBW, KindWriteLat:
	default:
		return fmt.Errorf("unknown kind %q", r.Kind)
	}
	if r.Size < 1 || r.Size > verbs.MaxMessageSize {
		return fmt.Errorf("size %d out of range 1..%d", r.Size, verbs.MaxMessageSize)
	}
	maxIter := verbs.MaxIterations
	if r.Kind == KindSendLat || r.Kind == KindTCPLat || r.Kind == KindWriteLat {
		maxIter = verbs.MaxLatencyIterations
	}
	if r.Iterations < 1 || r.Iterations > maxIter {
		return fmt.Errorf("iterations %d out of range 1..%d", r.Iterations, maxIter)
	}
	if r.Depth < 1 || r.Depth > verbs.MaxDepth {
		return fmt.Errorf("depth %d out of range 1..%d", r.Depth, verbs.MaxDepth)
	}
	if r.Duration < 0 || r.Duration > MaxDuration {
		return fmt.Errorf("duration %s out of range 0..%s", r.Duration, MaxDuration)
	}
	if r.Timeout <= 0 || r.Timeout > MaxDuration {
		return fmt.Errorf("timeout %s out of range (0, %s]", r.Timeout, MaxDuration)
	}
	if r.ServiceLevel < 0 || r.ServiceLevel > 15 {
		return fmt.Errorf("service level %d out of range 0..15", r.ServiceLevel)
	}
	if r.TrafficClass < 0 || r.TrafficClass > 255 {
		return fmt.Errorf("traffic class %d out of range 0..255", r.TrafficClass)
	}
	if r.QPs < 0 || r.QPs > verbs.MaxQPs {
		return fmt.Errorf("qps %d out of range 1..%d", r.QPs, verbs.MaxQPs)
	}
	rdmaBW := isRDMA(r.Kind) && isBandwidth(r.Kind)
	if r.QPs > 1 && !rdmaBW {
		return fmt.Errorf("kind %s runs on one queue pair: several are for the RDMA bandwidth kinds", r.Kind)
	}
	// Every QP has its own buffer: together they stay within what one
	// latency probe at the largest size takes (2 x MaxMessageSize), which
	// the chart's memory limit allows for.
	if n := max(r.QPs, 1); n*r.Size > 2*verbs.MaxMessageSize {
		return fmt.Errorf("%d queue pairs of %d bytes each exceed the %d bytes a probe may register", n, r.Size, 2*verbs.MaxMessageSize)
	}
	if r.Bidirectional && !rdmaBW {
		return fmt.Errorf("kind %s has no bidirectional mode: it is for the RDMA bandwidth kinds", r.Kind)
	}
	switch r.Memory {
	case "", verbs.MemoryHost:
	case verbs.MemoryGPU:
		if !isRDMA(r.Kind) {
			return fmt.Errorf("kind %s runs on host memory: GPU memory is for the RDMA kinds", r.Kind)
		}
		// One bounded GPU buffer per end: several QPs or both directions
		// would each want their own.
		if r.QPs > 1 || r.Bidirectional {
			return fmt.Errorf("GPU memory probes run on one queue pair, one way: leave qps and bidirectional off")
		}
	default:
		return fmt.Errorf("memory %q: want %s or %s", r.Memory, verbs.MemoryHost, verbs.MemoryGPU)
	}
	if r.Rail != nil {
		if !isRDMA(r.Kind) {
			return fmt.Errorf("kind %s has no rails: it runs on the control connection", r.Kind)
		}
		if err := r.Rail.validate(); err != nil {
			return err
		}
	}
	return nil
}

// version is the protocol version the request needs.
func (r Request) version() byte {
	if r.Memory == verbs.MemoryGPU {
		return versionGPU
	}
	if r.Kind == KindReadBW || r.Kind == KindWriteLat || r.QPs > 1 || r.Bidirectional {
		return versionKinds
	}
	if r.Rail != nil || r.ServiceLevel != 0 || r.TrafficClass != 0 {
		return versionRails
	}
	return MinVersion
}

// MaxDuration bounds any one probe.
const MaxDuration = 5 * time.Minute

// writeFrame sends one frame of version 1.
func writeFrame(w io.Writer, typ byte, v any) error {
	return writeFrameV(w, MinVersion, typ, v)
}

// writeFrameV sends one frame of version ver.
func writeFrameV(w io.Writer, ver, typ byte, v any) error {
	payload, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(payload) > MaxFrame {
		return fmt.Errorf("%s frame of %d bytes exceeds %d", typeNames[typ], len(payload), MaxFrame)
	}
	buf := make([]byte, 0, 9+len(payload))
	buf = append(buf, magic[:]...)
	buf = append(buf, ver, typ)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(payload)))
	buf = append(buf, payload...)
	_, err = w.Write(buf)
	return err
}

// frame is a received frame, its payload not yet decoded.
type frame struct {
	typ     byte
	payload []byte
}

// errVersion is returned for a frame of another protocol version.
var errVersion = errors.New("protocol version mismatch")

// readFrame reads one frame, checking magic, version, type and length
// before reading the payload.
func readFrame(r io.Reader) (frame, error) {
	var h [9]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return frame{}, fmt.Errorf("read frame header: %w", err)
	}
	if !bytes.Equal(h[:3], magic[:]) {
		return frame{}, fmt.Errorf("not a gpunode probe peer (bad magic %q)", h[:3])
	}
	if h[3] < MinVersion || h[3] > Version {
		return frame{}, fmt.Errorf("%w: peer speaks version %d, this agent %d to %d", errVersion, h[3], MinVersion, Version)
	}
	typ := h[4]
	if _, ok := typeNames[typ]; !ok {
		return frame{}, fmt.Errorf("unknown frame type %d", typ)
	}
	n := binary.BigEndian.Uint32(h[5:])
	if n > MaxFrame {
		return frame{}, fmt.Errorf("%s frame of %d bytes exceeds %d", typeNames[typ], n, MaxFrame)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return frame{}, fmt.Errorf("read %s frame: %w", typeNames[typ], err)
	}
	return frame{typ: typ, payload: payload}, nil
}

// decode reads the payload strictly into v (unknown fields are errors).
func (f frame) decode(v any) error {
	dec := json.NewDecoder(bytes.NewReader(f.payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode %s: %w", typeNames[f.typ], err)
	}
	if dec.More() {
		return fmt.Errorf("decode %s: trailing data", typeNames[f.typ])
	}
	return nil
}

// expect reads a frame of type want into v; an error frame becomes a
// *RemoteError.
func expect(r io.Reader, want byte, v any) error {
	f, err := readFrame(r)
	if err != nil {
		return err
	}
	if f.typ == typeError && want != typeError {
		var e RemoteError
		if err := f.decode(&e); err != nil {
			return err
		}
		if e.Code == "" {
			return errors.New("peer sent an error without a code")
		}
		return &e
	}
	if f.typ != want {
		return fmt.Errorf("expected %s, got %s", typeNames[want], typeNames[f.typ])
	}
	return f.decode(v)
}

const nonceSize = 32

func newNonce() ([]byte, error) {
	b := make([]byte, nonceSize)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("random nonce: %w", err)
	}
	return b, nil
}

// requestMAC authenticates a request (without its MAC) to the server's
// challenge.
func requestMAC(token []byte, serverNonce []byte, r Request) []byte {
	r.MAC = nil
	body, _ := json.Marshal(r) // a Request always marshals
	m := hmac.New(sha256.New, token)
	m.Write([]byte("gpunode-probe/1 request\x00"))
	m.Write(serverNonce)
	m.Write(body)
	return m.Sum(nil)
}

// acceptMAC proves to the client that the server holds the token.
func acceptMAC(token, serverNonce, clientNonce []byte) []byte {
	m := hmac.New(sha256.New, token)
	m.Write([]byte("gpunode-probe/1 accept\x00"))
	m.Write(serverNonce)
	m.Write(clientNonce)
	return m.Sum(nil)
}

// MinTokenBytes is the shortest token accepted.
const MinTokenBytes = 16

// ReadToken reads the shared token from a file (a mounted Kubernetes
// Secret); surrounding white space is dropped.
func ReadToken(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read probe token: %w", err)
	}
	t := []byte(strings.TrimSpace(string(b)))
	if len(t) < MinTokenBytes {
		return nil, fmt.Errorf("probe token in %s is %d bytes; at least %d are needed", path, len(t), MinTokenBytes)
	}
	return t, nil
}
