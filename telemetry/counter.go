package telemetry

// counterKey names one device counter: the device (GPU UUID, RDMA
// device/port), the counter and, where a device has several of a kind, a
// label (link number, ECC type and scope).
type counterKey struct {
	scope, name, label string
}

// counterState follows one device counter from round to round.
type counterState struct {
	raw, total uint64
}

// bank turns device counters, which restart at zero when a driver reloads
// or a device resets and may wrap when the device keeps them in fewer than
// 64 bits, into the monotonic counters Prometheus expects. The first
// reading is exported as it is, so a fresh agent agrees with the device
// (and with other exporters reading it); after that each reading adds what
// the device counted since the last one. Only the round goroutine uses it.
type bank map[counterKey]*counterState

// update records a reading of a counter kept in bits bits (0 means 64) and
// returns the running total.
func (b bank) update(k counterKey, raw uint64, bits uint8) uint64 {
	st, ok := b[k]
	if !ok {
		b[k] = &counterState{raw: raw, total: raw}
		return raw
	}
	st.total += delta(st.raw, raw, bits)
	st.raw = raw
	return st.total
}

// delta is what a counter counted between two readings. A smaller reading
// is a wrap when the counter is narrower than 64 bits and the readings sit
// at the top and the bottom of its range; otherwise it is a reset, after
// which the counter counted from zero to the new reading.
func delta(prev, cur uint64, bits uint8) uint64 {
	if cur >= prev {
		return cur - prev
	}
	if bits > 0 && bits < 64 {
		limit := uint64(1) << bits
		if prev < limit && prev >= limit-limit/4 && cur < limit/4 {
			return limit - prev + cur
		}
	}
	return cur
}
