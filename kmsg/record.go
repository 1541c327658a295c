// Package kmsg reads the kernel log (/dev/kmsg of the host, through the
// host root) and picks out the records that say a GPU, NVSwitch, NIC or
// PCIe device failed: NVIDIA Xid and SXid reports, "fallen off the bus",
// mlx5 health syndromes, PCIe AER reports and amdgpu RAS errors.
//
// The format is the kernel's (Documentation/ABI/testing/dev-kmsg): one
// record per read(2) from the device, "PRI,SEQ,TS_USEC,FLAGS[,...];TEXT\n"
// followed by continuation lines " KEY=VALUE\n" (SUBSYSTEM=pci,
// DEVICE=+pci:0000:3b:00.0 for dev_printk records). Bytes under 0x20, over
// 0x7e and the backslash in TEXT are escaped as \xNN. A plain file holding
// such records one after the other (a simulated node's dev/kmsg) is read
// the same way.
package kmsg

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Record is one kernel log record.
type Record struct {
	// Priority is the syslog priority: facility*8 + level (3 = kernel err).
	Priority uint64
	// Seq is the kernel's sequence number of the record; it never repeats
	// within a boot and grows by one per record.
	Seq uint64
	// Since is the record's time since boot (the kernel's local clock).
	Since time.Duration
	// Text is the message, unescaped (a multi-line printk keeps its \n).
	Text string
	// Dict is the continuation lines' KEY=VALUE pairs (SUBSYSTEM, DEVICE).
	Dict map[string]string
}

// Level is the record's log level (0 emerg .. 7 debug).
func (r Record) Level() uint64 { return r.Priority & 7 }

// ErrNotRecord is returned for bytes that are not a kmsg record.
var ErrNotRecord = errors.New("not a kmsg record")

// ParseRecord parses one record: its header line and any continuation
// lines after it, with or without the final newline.
func ParseRecord(b []byte) (Record, error) {
	s := strings.TrimSuffix(string(b), "\n")
	head, rest, _ := strings.Cut(s, "\n")
	prefix, text, ok := strings.Cut(head, ";")
	if !ok {
		return Record{}, fmt.Errorf("%w: no ';' after the header", ErrNotRecord)
	}
	fields := strings.Split(prefix, ",")
	if len(fields) < 3 {
		return Record{}, fmt.Errorf("%w: header %q has fewer than 3 fields", ErrNotRecord, prefix)
	}
	var r Record
	var err error
	if r.Priority, err = strconv.ParseUint(fields[0], 10, 32); err != nil {
		return Record{}, fmt.Errorf("%w: priority %q", ErrNotRecord, fields[0])
	}
	if r.Seq, err = strconv.ParseUint(fields[1], 10, 64); err != nil {
		return Record{}, fmt.Errorf("%w: sequence %q", ErrNotRecord, fields[1])
	}
	us, err := strconv.ParseUint(fields[2], 10, 63)
	if err != nil || us > uint64(1<<63-1)/1000 {
		return Record{}, fmt.Errorf("%w: timestamp %q", ErrNotRecord, fields[2])
	}
	r.Since = time.Duration(us) * time.Microsecond
	r.Text = unescape(text)
	for line := range strings.SplitSeq(rest, "\n") {
		k, v, ok := strings.Cut(strings.TrimPrefix(line, " "), "=")
		if !ok || !strings.HasPrefix(line, " ") {
			continue // not a continuation line: ignored, as the kernel's own readers do
		}
		if r.Dict == nil {
			r.Dict = map[string]string{}
		}
		r.Dict[k] = unescape(v)
	}
	return r, nil
}

// unescape undoes the kernel's \xNN escapes; anything else stays as is.
func unescape(s string) string {
	if !strings.Contains(s, `\x`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			if n, err := strconv.ParseUint(s[i+2:i+4], 16, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// splitRecords splits a plain file of records: a record is a header line
// and the continuation lines (starting with a space) after it.
func splitRecords(b []byte) [][]byte {
	var out [][]byte
	start := -1
	for i := 0; i < len(b); {
		end := i
		for end < len(b) && b[end] != '\n' {
			end++
		}
		line := b[i:end]
		if len(line) > 0 && line[0] != ' ' {
			if start >= 0 {
				out = append(out, b[start:i])
			}
			start = i
		}
		i = end + 1
	}
	if start >= 0 {
		out = append(out, b[start:])
	}
	return out
}
