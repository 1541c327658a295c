package dcb

import (
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Whatever one reply message holds (type, flags, body: the library's
// errno and extended-ack parsing and ours), reading it neither panics nor
// reads out of bounds, and a mask comes only without an error.
func FuzzReply(f *testing.F) {
	f.Add(uint16(unix.RTM_GETDCB), uint16(0), goodReply())
	f.Add(uint16(unix.RTM_GETDCB), uint16(0), dcbReply(attr(attrIEEE, attr(attrIEEEPFC, []byte{0, 8}))))
	f.Add(uint16(netlink.Error), uint16(0), []byte{0xa1, 0xff, 0xff, 0xff})                                                    // -EOPNOTSUPP
	f.Add(uint16(netlink.Error), uint16(netlink.AcknowledgeTLVs), append([]byte{0xed, 0xff, 0xff, 0xff}, make([]byte, 16)...)) // -ENODEV, ext ack
	f.Add(uint16(netlink.Done), uint16(netlink.Multi), []byte{})
	f.Add(uint16(unix.RTM_GETDCB), uint16(0), []byte{})
	f.Add(uint16(unix.RTM_GETDCB), uint16(0), dcbReply(attr(attrIEEE, attr(attrIEEEAppTable, append(attr(attrIEEEApp, []byte{5, 3, 24, 0}), attr(attrIEEEApp, []byte{5, 9, 99, 0})...)))))
	f.Fuzz(func(t *testing.T, typ, flags uint16, body []byte) {
		conn := kernel(answer(netlink.HeaderType(typ), netlink.HeaderFlags(flags), body))
		defer conn.Close()
		mask, err := query(conn, "eth0")
		if err != nil && mask != 0 {
			t.Fatalf("mask %08b with an error (%v)", mask, err)
		}
		// The application table's parser on the same replies.
		conn2 := kernel(answer(netlink.HeaderType(typ), netlink.HeaderFlags(flags), body))
		defer conn2.Close()
		apps, err := getDSCP(conn2, "eth0")
		if err != nil && apps != nil {
			t.Fatalf("DSCP map %v with an error (%v)", apps, err)
		}
		for d, p := range apps {
			if d >= 64 || p >= 8 {
				t.Fatalf("DSCP %d -> priority %d", d, p)
			}
		}
	})
}

// Whatever the kernel answers to a set (the get before it answered
// well), set neither panics nor reports success unless the reply is an
// RTM_SETDCB for DCB_CMD_IEEE_SET whose status byte is 0.
func FuzzSetReply(f *testing.F) {
	f.Add(uint16(unix.RTM_SETDCB), uint16(0), setReply(0))
	f.Add(uint16(unix.RTM_SETDCB), uint16(0), setReply(234))
	f.Add(uint16(netlink.Error), uint16(0), []byte{0xa1, 0xff, 0xff, 0xff})
	f.Add(uint16(unix.RTM_SETDCB), uint16(0), []byte{0, cmdIEEESet})
	f.Fuzz(func(t *testing.T, typ, flags uint16, body []byte) {
		k := &dcbKernel{pfc: make([]byte, ieeePFCSize), setAnswer: answer(netlink.HeaderType(typ), netlink.HeaderFlags(flags), body)}
		conn := k.conn()
		defer conn.Close()
		err := set(conn, "eth0", 8)
		if err == nil && (typ != unix.RTM_SETDCB || parseSetStatus(body) != nil) {
			t.Fatalf("success from a %d reply % x", typ, body)
		}
	})
}
