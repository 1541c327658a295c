package topology

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// /proc/interrupts has a line per interrupt with a count column per online
// CPU: about 2.5 KB a line on a 224-CPU host, and a DGX with one completion
// vector per CPU per NIC plus NVMe queues has thousands of lines. That can
// outgrow hostfs.MaxFileSize, so the file is streamed line by line instead
// of read whole, within these bounds.
const (
	// maxInterruptsSize stops a runaway file (a fixture linked to
	// /dev/urandom) from being read forever.
	maxInterruptsSize = 64 << 20
	// maxInterruptsLine fits 8192 CPUs (the kernel's NR_CPUS limit) of
	// 11-character count columns.
	maxInterruptsLine = 1 << 20
)

// parseInterrupts reads /proc/interrupts and returns the action names of
// every numbered interrupt, by number:
//
//	          CPU0       CPU1
//	123:         10          0  IR-PCI-MSIX-0000:18:00.0   0-edge      mlx5_comp0@pci:0000:18:00.0
//	NMI:          0          0   Non-maskable interrupts
//
// Lines with a name instead of a number (NMI, LOC, IPI0, ERR) are per-CPU
// or architecture counters, not IRQ lines, and are skipped. Malformed lines
// are reported; the good ones are still returned. The parser is linear and
// allocates only the action names it returns.
func parseInterrupts(r io.Reader) (map[int]string, error) {
	sc := bufio.NewScanner(io.LimitReader(r, maxInterruptsSize+1))
	sc.Buffer(make([]byte, 0, 64<<10), maxInterruptsLine)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("header: %w", err)
		}
		return nil, errors.New("empty, no header line")
	}
	ncpu, err := parseInterruptsHeader(sc.Bytes())
	if err != nil {
		return nil, err
	}
	names := make(map[int]string)
	var bad int
	var firstBad error
	lineNo, size := 1, len(sc.Bytes())+1
	for sc.Scan() {
		lineNo++
		size += len(sc.Bytes()) + 1
		num, actions, numbered, err := parseInterruptLine(sc.Bytes(), ncpu)
		if err != nil {
			if bad++; firstBad == nil {
				firstBad = fmt.Errorf("line %d: %w", lineNo, err)
			}
			continue
		}
		if numbered {
			names[num] = actions
		}
	}
	var errs []error
	if bad > 0 {
		errs = append(errs, fmt.Errorf("%d malformed lines, first: %w", bad, firstBad))
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("line %d: %w", lineNo+1, err))
	} else if size > maxInterruptsSize {
		errs = append(errs, fmt.Errorf("stopped after %d bytes", maxInterruptsSize))
	}
	return names, errors.Join(errs...)
}

// parseInterruptsHeader counts the "CPUn" columns of the header. With CPUs
// offline the numbers have gaps ("CPU0 CPU2"), so only the count matters.
func parseInterruptsHeader(line []byte) (int, error) {
	n := 0
	for tok, rest := nextToken(line); tok != nil; tok, rest = nextToken(rest) {
		num, ok := bytes.CutPrefix(tok, []byte("CPU"))
		if !ok || !allDigits(num) {
			return 0, fmt.Errorf("header %q: want CPU0 CPU1 ...", truncate(string(line), 60))
		}
		n++
	}
	if n == 0 {
		return 0, errors.New("header has no CPU columns")
	}
	return n, nil
}

// parseInterruptLine reads one line after the header. numbered is false for
// blank lines and named counters (NMI, LOC, ...).
//
// After the label come up to ncpu counts: some lines have fewer, such as
// ERR and MIS on x86, so counts end at the first token that is not a
// number. Then the irq chip name, then the hardware IRQ number and trigger
// type, whose shape depends on the kernel and architecture:
//
//	x86, since 4.x:   IR-PCI-MSIX-0000:18:00.0   0-edge      mlx5_comp0@pci:0000:18:00.0
//	x86, no domain:   IO-APIC        -edge       timer
//	x86, older:       IR-PCI-MSI-edge      eth0            (type fused into the chip name)
//	arm64:            GICv3  27 Level     arch_timer
//	arm64 MSI:        ITS-MSI 524288 Edge      nvme0q0
//
// so after the chip, tokens that are a number, "Level"/"Edge" or
// "<number>-<word>" are skipped, and the rest of the line is the action
// names ("i801_smbus, ehci_hcd:usb1" when an IRQ is shared), which may
// themselves contain spaces ("kvm guest vtimer").
func parseInterruptLine(line []byte, ncpu int) (num int, actions string, numbered bool, err error) {
	if !utf8.Valid(line) || bytes.IndexByte(line, 0) >= 0 {
		return 0, "", false, errors.New("not text (bad UTF-8 or NUL bytes)")
	}
	line = bytes.TrimLeft(line, " \t\v\f\r")
	if len(bytes.TrimSpace(line)) == 0 {
		return 0, "", false, nil
	}
	label, rest, ok := bytes.Cut(line, []byte(":"))
	if !ok || len(label) == 0 {
		return 0, "", false, fmt.Errorf("%q: no \"label:\"", truncate(string(line), 60))
	}
	if !allDigits(label) {
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
				return 0, "", false, fmt.Errorf("%q: bad label", truncate(string(line), 60))
			}
		}
		return 0, "", false, nil // a named counter
	}
	if len(label) > 9 { // IRQ numbers are far below 10^9; this also keeps num from overflowing
		return 0, "", false, fmt.Errorf("%q: IRQ number too large", truncate(string(line), 60))
	}
	for _, c := range label {
		num = num*10 + int(c-'0')
	}
	tok, rest := nextToken(rest)
	for i := 0; i < ncpu && tok != nil && allDigits(tok); i++ {
		tok, rest = nextToken(rest)
	}
	if tok == nil {
		return num, "", true, nil // counts only: no chip, no action
	}
	// tok is the chip name; skip the hardware IRQ number and type.
	tok, rest = nextToken(rest)
	for tok != nil && isHwirqOrType(tok) {
		tok, rest = nextToken(rest)
	}
	if tok == nil {
		return num, "", true, nil
	}
	// The actions run from tok to the end of the line. tok and rest are
	// slices of line, so recover where tok starts.
	start := len(line) - len(rest) - len(tok)
	return num, string(bytes.TrimSpace(line[start:])), true, nil
}

// isHwirqOrType matches what the kernel prints between the chip name and
// the actions: "27", "Level", "Edge", "0-edge", "-fasteoi".
func isHwirqOrType(tok []byte) bool {
	if allDigits(tok) || string(tok) == "Level" || string(tok) == "Edge" {
		return true
	}
	n, typ, ok := bytes.Cut(tok, []byte("-"))
	if !ok || len(typ) == 0 || (len(n) > 0 && !allDigits(n)) {
		return false
	}
	for _, c := range typ {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// nextToken returns the next blank-separated token of b and what follows
// it, or nil at the end.
func nextToken(b []byte) (tok, rest []byte) {
	i := 0
	for i < len(b) && isBlank(b[i]) {
		i++
	}
	if i == len(b) {
		return nil, nil
	}
	j := i
	for j < len(b) && !isBlank(b[j]) {
		j++
	}
	return b[i:j], b[j:]
}

// isBlank matches ASCII white space; the kernel writes only spaces.
func isBlank(c byte) bool { return c == ' ' || c >= '\t' && c <= '\r' }

func allDigits(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
