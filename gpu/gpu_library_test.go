package gpu

import "testing"

func TestMappedLibrary(t *testing.T) {
	// Lines as /proc/self/maps writes them (proc(5)); the path may hold spaces.
	maps := `55d0c8a00000-55d0c8a02000 r--p 00000000 08:01 1234                       /usr/bin/gpunode-agent
7f1c2a000000-7f1c2a021000 rw-p 00000000 00:00 0
7f1c2b000000-7f1c2b100000 r--p 00000000 08:01 5678                       /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.550.54.15
7f1c2c000000-7f1c2c100000 r--p 00000000 08:01 5679                       /opt/my libs/libamd_smi.so.24.7.60401
7f1c2d000000-7f1c2d001000 r--p 00000000 08:01 5680                       /usr/lib/libnvidia-ml-helper.so
7ffd1e000000-7ffd1e021000 rw-p 00000000 00:00 0                          [stack]
`
	for _, tc := range []struct{ soname, want string }{
		{"libnvidia-ml.so.1", "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.550.54.15"},
		{"libamd_smi.so", "/opt/my libs/libamd_smi.so.24.7.60401"},
		{"libcuda.so.1", ""},
	} {
		if got := MappedLibrary([]byte(maps), tc.soname); got != tc.want {
			t.Errorf("MappedLibrary(%q) = %q, want %q", tc.soname, got, tc.want)
		}
	}
}
