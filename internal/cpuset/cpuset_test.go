package cpuset

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		n        int
	}{
		{"", "", 0},
		{"0", "0", 1},
		{"0-3", "0-3", 4},
		{" 0-55,112-167\n", "0-55,112-167", 112},
		{"3,1,2,1", "1-3", 3},
		{"0-15:2/4", "0-1,4-5,8-9,12-13", 8},
		{"0-6:2/4", "0-1,4-5", 4},
		{"8191", "8191", 1},
	} {
		s, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if s.String() != tc.want || s.Len() != tc.n {
			t.Errorf("Parse(%q) = %q (%d CPUs), want %q (%d)", tc.in, s, s.Len(), tc.want, tc.n)
		}
	}
}

func TestParseRejectsGarbage(t *testing.T) {
	for _, in := range []string{",", "1,", "a", "-1", "3-1", "1-", "0-3:0/4", "0-3:5/4", "2:1/2", "8192", "1-99999999999999999999", "0x1", "1 2"} {
		if s, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %q, want an error", in, s)
		}
	}
}

func TestMask(t *testing.T) {
	for _, tc := range []struct{ in, list, mask string }{
		{"f", "0-3", "0000000f"},
		{"ff,ffffffff", "0-39", "000000ff,ffffffff"},
		{"00000000,00000001", "0", "00000000,00000001"},
		{"80000000,00000000", "63", "80000000,00000000"},
	} {
		s, err := ParseMask(tc.in)
		if err != nil {
			t.Fatalf("ParseMask(%q): %v", tc.in, err)
		}
		if s.String() != tc.list {
			t.Errorf("ParseMask(%q) = %q, want %q", tc.in, s, tc.list)
		}
		if got := s.Mask(len(strings.Split(tc.in, ","))); got != tc.mask {
			t.Errorf("Mask() = %q, want %q", got, tc.mask)
		}
	}
	for _, in := range []string{"", "g", "1,,2", "123456789", strings.Repeat("f,", 300) + "f"} {
		if _, err := ParseMask(in); err == nil {
			t.Errorf("ParseMask(%q): want an error", in)
		}
	}
}

func TestSetOps(t *testing.T) {
	a, b := Of(0, 1, 2, 3), Of(2, 3, 4)
	if got := a.Union(b).String(); got != "0-4" {
		t.Errorf("union = %s", got)
	}
	if got := a.Intersect(b).String(); got != "2-3" {
		t.Errorf("intersect = %s", got)
	}
	if got := a.Difference(b).String(); got != "0-1" {
		t.Errorf("difference = %s", got)
	}
	if !a.Contains(3) || a.Contains(4) || !Of().IsEmpty() || !a.Equal(Of(3, 2, 1, 0)) {
		t.Error("Contains/IsEmpty/Equal disagree")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"0-3,8", "0-15:2/4", "", "1,", "3-1", "0-8191"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := Parse(in)
		if err != nil {
			return
		}
		again, err := Parse(s.String())
		if err != nil || !again.Equal(s) {
			t.Fatalf("round trip of %q via %q failed: %v", in, s.String(), err)
		}
		m, err := ParseMask(s.Mask(0))
		if err != nil || !m.Equal(s) {
			t.Fatalf("mask round trip of %q failed: %v", in, err)
		}
	})
}
