package exporters

import "testing"

func TestAcceptsGzip(t *testing.T) {
	for header, want := range map[string]bool{
		"":                            false,
		"gzip":                        true,
		"GZIP":                        true,
		"deflate, gzip, br, zstd":     true,
		"gzip;q=0":                    false,
		"gzip; q=0.000":               false,
		"gzip;q=0.5":                  true,
		"identity":                    false,
		"x-gzip":                      false,
		"br;q=1.0, gzip;q=0.8, *;q=0": true,
		",,;;":                        false,
	} {
		if got := acceptsGzip(header); got != want {
			t.Errorf("acceptsGzip(%q) = %v", header, got)
		}
	}
}

func TestDCGMBusID(t *testing.T) {
	for in, want := range map[string]string{
		"0000:1b:00.0":  "00000000:1B:00.0",
		"10000:e1:00.0": "00010000:E1:00.0", // a VMD domain
		"":              "",
		"garbage":       "GARBAGE",
		"zz:1b:00.0":    "zz:1B:00.0", // an unparsable domain is kept
	} {
		if got := nvmlBusID(in); got != want {
			t.Errorf("nvmlBusID(%q) = %q, want %q", in, got, want)
		}
	}
}
