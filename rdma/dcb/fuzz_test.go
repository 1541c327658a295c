package dcb

import (
	"testing"

	"golang.org/x/sys/unix"
)

// Whatever a datagram holds, parsing neither panics nor reads out of
// bounds, and a mask comes only with done.
func FuzzParseReply(f *testing.F) {
	pfc := make([]byte, 133)
	pfc[1] = 8
	f.Add(msg(unix.RTM_GETDCB, 7, dcbReply(attr(attrIEEE, attr(attrIEEEPFC, pfc)))))
	f.Add(msg(unix.NLMSG_ERROR, 7, errMsg(unix.EOPNOTSUPP)))
	f.Add([]byte{})
	f.Add([]byte{255, 255, 255, 255, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		mask, done, err := parseReply(b, 7)
		if (err != nil || !done) && mask != 0 {
			t.Fatalf("mask %08b without a complete reply (done %v, err %v)", mask, done, err)
		}
	})
}
