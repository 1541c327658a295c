package nvml

import (
	"encoding/binary"
	"testing"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

func TestFieldUint(t *testing.T) {
	fv := func(vt gonvml.ValueType, put func(b []byte)) gonvml.FieldValue {
		v := gonvml.FieldValue{ValueType: uint32(vt)}
		put(v.Value[:])
		return v
	}
	u64 := func(x uint64) func([]byte) { return func(b []byte) { binary.NativeEndian.PutUint64(b, x) } }
	u32 := func(x uint32) func([]byte) { return func(b []byte) { binary.NativeEndian.PutUint32(b, x) } }
	for name, tc := range map[string]struct {
		in   gonvml.FieldValue
		want uint64
		bits uint8
		ok   bool
	}{
		"unsigned long long": {fv(gonvml.VALUE_TYPE_UNSIGNED_LONG_LONG, u64(1<<63+5)), 1<<63 + 5, 64, true},
		"unsigned long":      {fv(gonvml.VALUE_TYPE_UNSIGNED_LONG, u64(7)), 7, 64, true},
		"unsigned int":       {fv(gonvml.VALUE_TYPE_UNSIGNED_INT, u32(1<<32-1)), 1<<32 - 1, 32, true},
		"unsigned short":     {fv(gonvml.VALUE_TYPE_UNSIGNED_SHORT, func(b []byte) { binary.NativeEndian.PutUint16(b, 65535) }), 65535, 16, true},
		"signed long long":   {fv(gonvml.VALUE_TYPE_SIGNED_LONG_LONG, u64(42)), 42, 63, true},
		"negative long long": {fv(gonvml.VALUE_TYPE_SIGNED_LONG_LONG, u64(1<<64-1)), 0, 0, false},
		"signed int":         {fv(gonvml.VALUE_TYPE_SIGNED_INT, u32(9)), 9, 31, true},
		"negative int":       {fv(gonvml.VALUE_TYPE_SIGNED_INT, u32(1<<31)), 0, 0, false},
		"double":             {fv(gonvml.VALUE_TYPE_DOUBLE, u64(0x3ff0000000000000)), 0, 0, false},
		"unknown type":       {fv(gonvml.ValueType(99), u64(1)), 0, 0, false},
	} {
		v, bits, ok := fieldUint(tc.in)
		if v != tc.want || bits != tc.bits || ok != tc.ok {
			t.Errorf("%s: %d %d %v, want %d %d %v", name, v, bits, ok, tc.want, tc.bits, tc.ok)
		}
	}
}
