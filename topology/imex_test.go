package topology

import (
	"testing"
)

// procDevicesIMEX is /proc/devices of a node whose driver registered the
// IMEX channel device. The layout is the kernel's (fs/proc/devices.c);
// the nvidia entries and the major 234 follow NVIDIA's IMEX guide
// ("IMEX Channels": `cat /proc/devices | grep nvidia-caps-imex-channels`
// prints "234 nvidia-caps-imex-channels"; the major differs per node).
const procDevicesIMEX = `Character devices:
  1 mem
  4 /dev/vc/0
  4 tty
195 nvidia-frontend
234 nvidia-caps-imex-channels
235 nvidia-caps
509 nvidia-uvm

Block devices:
  7 loop
259 blkext
`

func TestIMEX(t *testing.T) {
	tr := dgxTree(t)
	top, err := Discover(t.Context(), tr.fs())
	if err != nil || top.IMEX != nil {
		t.Fatalf("DGX H100 tree: IMEX = %+v, err %v; want none", top.IMEX, err)
	}

	tr.file("/proc/devices", procDevicesIMEX)
	tr.file("/dev/nvidia-caps-imex-channels/channel0", "")
	tr.file("/dev/nvidia-caps-imex-channels/channel12", "")
	tr.file("/dev/nvidia-caps-imex-channels/README", "") // not a channel
	tr.file("/etc/nvidia-imex/config.cfg", "IMEX_NODE_CONFIG_FILE=/etc/nvidia-imex/nodes_config.cfg\n")
	tr.file("/etc/nvidia-imex/nodes_config.cfg", "10.1.0.1\n10.1.0.2\n\n# rack 2\n10.1.0.3\n")
	tr.file("/proc/4242/comm", "nvidia-imex\n")
	tr.file("/proc/4243/comm", "bash\n")
	top, err = Discover(t.Context(), tr.fs())
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, top.IMEX, &IMEX{ChannelMajor: 234, Channels: []int{0, 12}, Config: true, DomainNodes: 3, Daemon: true})

	// The driver supports channels but none was created, and no daemon:
	// what a node looks like before the DRA driver or the admin acts.
	bare := dgxTree(t)
	bare.file("/proc/devices", procDevicesIMEX)
	top, _ = Discover(t.Context(), bare.fs())
	sameJSON(t, top.IMEX, &IMEX{ChannelMajor: 234})
}

func TestCharMajor(t *testing.T) {
	for _, c := range []struct {
		in, name string
		want     int
	}{
		{procDevicesIMEX, "nvidia-caps-imex-channels", 234},
		{procDevicesIMEX, "nvidia-uvm", 509},
		{procDevicesIMEX, "blkext", 0}, // a block device, not a character device
		{procDevicesIMEX, "nvidia-caps-imex", 0},
		{"", "nvidia-caps-imex-channels", 0},
	} {
		if got := charMajor(c.in, c.name); got != c.want {
			t.Errorf("charMajor(%q) = %d, want %d", c.name, got, c.want)
		}
	}
}

func TestMachine(t *testing.T) {
	tr := dgxTree(t)
	if top, _ := Discover(t.Context(), tr.fs()); top.Machine != "" {
		t.Errorf("no DMI: machine %q", top.Machine)
	}
	tr.file("/sys/class/dmi/id/product_name", "DGXH100\n")
	if top, _ := Discover(t.Context(), tr.fs()); top.Machine != "DGXH100" {
		t.Errorf("machine %q, want DGXH100", top.Machine)
	}
}
