package gpu

import "testing"

func TestNormalizePCIBusID(t *testing.T) {
	for in, want := range map[string]string{
		"00000000:1B:00.0":      "0000:1b:00.0",
		"0000:1b:00.0":          "0000:1b:00.0",
		"1b:00.0":               "1b:00.0", // no domain: left alone
		"0:1B:00.0":             "0000:1b:00.0",
		"00010000:E1:00.0":      "10000:e1:00.0", // Intel VMD domain
		" 00000000:1B:00.0\x00": "0000:1b:00.0",
		"":                      "",
		"garbage":               "garbage",
	} {
		if got := NormalizePCIBusID(in); got != want {
			t.Errorf("NormalizePCIBusID(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzNormalizePCIBusID(f *testing.F) {
	for _, s := range []string{"00000000:1B:00.0", "", "::", "a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		once := NormalizePCIBusID(s)
		if NormalizePCIBusID(once) != once {
			t.Fatalf("not idempotent: %q -> %q -> %q", s, once, NormalizePCIBusID(once))
		}
	})
}
