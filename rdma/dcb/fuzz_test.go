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
	f.Fuzz(func(t *testing.T, typ, flags uint16, body []byte) {
		conn := kernel(answer(netlink.HeaderType(typ), netlink.HeaderFlags(flags), body))
		defer conn.Close()
		mask, err := query(conn, "eth0")
		if err != nil && mask != 0 {
			t.Fatalf("mask %08b with an error (%v)", mask, err)
		}
	})
}
