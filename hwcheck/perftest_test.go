package hwcheck

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func open(t *testing.T, name string) *os.File {
	t.Helper()
	f, err := os.Open("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// The recorded outputs (testdata/SOURCES.md): perftest's clients and the
// agent's probe on soft-RoCE in test/hwcheck's VM, one round of its run.
func TestParsePerftestRecorded(t *testing.T) {
	bw, err := ParsePerftestBW(open(t, "perftest-ib_write_bw-softroce.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if bw.Size != 65536 || bw.Iterations != 1000 || bw.Average <= 0 || bw.Peak < bw.Average {
		t.Errorf("ib_write_bw %+v", bw)
	}
	// MB is 2^20 bytes: the message rate times the size is the average.
	if msg := bw.MsgRateMpps * 1e6 * 65536; msg < bw.Average*0.95 || msg > bw.Average*1.05 {
		t.Errorf("ib_write_bw average %.0f B/s, message rate x size %.0f B/s", bw.Average, msg)
	}
	lat, err := ParsePerftestLat(open(t, "perftest-ib_send_lat-softroce.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if lat.Size != 2 || lat.Iterations != 1000 || !(lat.Min > 0 && lat.Min <= lat.Typical && lat.Typical <= lat.Max && lat.P99 <= lat.P999) {
		t.Errorf("ib_send_lat %+v", lat)
	}
	pr, err := ParseProbeReport(open(t, "probe-loopback-softroce.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(pr.Results) != 2 || len(pr.Errors) != 0 {
		t.Fatalf("probe report %+v", pr)
	}
	w, l := pr.Results[0], pr.Results[1]
	if w.Kind != "write_bw" || w.Local.Device != "rxe0" || w.Local.Port != 1 || w.Local.GIDIndex < 0 || w.Size != bw.Size ||
		w.Iterations != bw.Iterations || w.Depth != 128 || w.BytesPerSecond <= 0 {
		t.Errorf("probe write_bw %+v", w)
	}
	if l.Kind != "send_lat" || l.Latency == nil || l.Latency.P50 <= 0 || l.Latency.Samples != 1000 || l.Size != lat.Size {
		t.Errorf("probe send_lat %+v", l)
	}
	rows := ComparePerftest("rxe0/1", []PerftestRound{{ProbeBW: &w, ProbeLat: &l, BW: &bw, Lat: &lat}})
	if len(rows) != 2 || rows[0].Fact != "probe write_bw vs ib_write_bw" || rows[1].Fact != "probe send_lat vs ib_send_lat" {
		t.Fatalf("rows %+v", rows)
	}
	for _, r := range rows {
		if r.Verdict != Agree {
			t.Errorf("recorded run: %+v", r)
		}
	}
}

func TestParsePerftestUnits(t *testing.T) {
	const gbits = " #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]   MsgRate[Mpps]\n" +
		" 65536      5000             97.52              97.48              0.185924\n"
	bw, err := ParsePerftestBW(strings.NewReader(gbits))
	if err != nil || bw.Average != 97.48e9/8 {
		t.Errorf("--report_gbits: %+v, %v", bw, err)
	}
	for _, bad := range []string{
		"",
		" #bytes #iterations BW peak[MB/sec]\n", // no result line
		" #bytes  #iterations  BW peak[KB/sec]  BW average[KB/sec]  MsgRate[Mpps]\n 65536 5000 1 1 1\n", // unknown unit
		" #bytes  #iterations  BW peak[MB/sec]  BW average[MB/sec]  MsgRate[Mpps]\n 65536 5000 1.0 x 1\n",
	} {
		if _, err := ParsePerftestBW(strings.NewReader(bad)); err == nil {
			t.Errorf("ib_write_bw %q: no error", bad)
		}
	}
	// Not a latency table (an ib_write_bw output given to the latency
	// parser): refused, not read as microseconds.
	if _, err := ParsePerftestLat(strings.NewReader(gbits)); err == nil {
		t.Error("ib_send_lat parser took a bandwidth table")
	}
}

func probeRound(bwBps float64, p50 time.Duration, perfBps float64, typical time.Duration) PerftestRound {
	w := ProbeResult{Kind: "write_bw", Size: 65536, Iterations: 1000, Depth: 128, BytesPerSecond: bwBps}
	l := ProbeResult{Kind: "send_lat", Size: 2, Iterations: 1000}
	l.Latency = &struct {
		Samples int           `json:"samples"`
		P50     time.Duration `json:"p50_ns"`
	}{Samples: 1000, P50: p50}
	return PerftestRound{ProbeBW: &w, ProbeLat: &l,
		BW:  &PerftestBW{Size: 65536, Iterations: 1000, Average: perfBps},
		Lat: &PerftestLat{Size: 2, Iterations: 1000, Typical: typical}}
}

func TestComparePerftest(t *testing.T) {
	us := time.Microsecond
	for _, c := range []struct {
		name     string
		rounds   []PerftestRound
		bw, lat  Verdict
		bwNote   string
		latAgent string
	}{
		{name: "close", rounds: []PerftestRound{probeRound(1e9, 10*us, 1.05e9, 9*us)}, bw: Agree, lat: Agree, latAgent: "10µs p50"},
		// Best of the rounds: a disturbed round of either tool does not
		// count against the other's good one.
		{name: "best round", rounds: []PerftestRound{probeRound(0.2e9, 50*us, 1e9, 10*us), probeRound(0.9e9, 11*us, 0.3e9, 40*us)}, bw: Agree, lat: Agree},
		// A unit error (MB/s read as bytes/s) or a probe 3x slower.
		{name: "units", rounds: []PerftestRound{probeRound(1e9/(1<<20), 30*us, 1e9, 10*us)}, bw: Differ, lat: Differ},
		// Faster than perftest is allowed up to 4x, slower up to 2x.
		{name: "faster", rounds: []PerftestRound{probeRound(3.9e9, 3*us, 1e9, 10*us)}, bw: Agree, lat: Agree},
		{name: "much faster", rounds: []PerftestRound{probeRound(4.1e9, 2*us, 1e9, 10*us)}, bw: Differ, lat: Differ},
		{name: "slower", rounds: []PerftestRound{probeRound(0.45e9, 21*us, 1e9, 10*us)}, bw: Differ, lat: Differ},
		// perftest's own rounds 3x apart widen the window by as much:
		// 5x its best is in.
		{name: "scatter", rounds: []PerftestRound{probeRound(15e9, 10*us, 1e9, 10*us), probeRound(15e9, 10*us, 3e9, 10*us)}, bw: Agree, lat: Agree,
			bwNote: "perftest's rounds 3.00x apart"},
	} {
		rows := ComparePerftest("mlx5_0/1", c.rounds)
		if rows[0].Verdict != c.bw || rows[1].Verdict != c.lat || !strings.Contains(rows[0].Note, c.bwNote) ||
			(c.latAgent != "" && rows[1].Agent != c.latAgent) || rows[0].Device != "mlx5_0/1" || rows[0].Section != "rdma-probe" {
			t.Errorf("%s: %+v", c.name, rows)
		}
	}

	// Different parameters are a disagreement whatever the figures.
	r := probeRound(1e9, 10*us, 1e9, 10*us)
	r.BW.Iterations = 5000
	if rows := ComparePerftest("rxe0/1", []PerftestRound{r}); rows[0].Verdict != Differ || !strings.Contains(rows[0].Note, "parameters differ") {
		t.Errorf("parameters: %+v", rows[0])
	}
	// perftest never answered: both rows fail and say why.
	r = probeRound(1e9, 10*us, 1e9, 10*us)
	r.BW, r.BWErr = nil, errors.New("ib_write_bw printed no result line")
	r.Lat = nil
	rows := ComparePerftest("rxe0/1", []PerftestRound{r})
	if rows[0].Verdict != Differ || !strings.Contains(rows[0].Note, "printed no result line") || rows[1].Verdict != Differ ||
		!strings.Contains(rows[1].Note, "no reason given") {
		t.Errorf("no perftest result: %+v", rows)
	}
}
