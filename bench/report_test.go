package bench

import (
	"bytes"
	"encoding/json"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// sampleReport is a report as Compare would make it, with numbers chosen so
// that the charts' bars have distinct, known lengths and one goes negative.
func sampleReport() Report {
	mk := func(name string, v Verdict, m Mode, prog, base []float64) CaseResult {
		var net, ratio []float64
		for i := range prog {
			net = append(net, prog[i]-base[i])
			ratio = append(ratio, prog[i]/base[i])
		}
		res := func(s []float64) Result {
			return Result{NsPerPacket: newStats(s), WallNsPerPacket: newStats(s), Packets: 3 << 20, Delivered: 3 << 20}
		}
		return CaseResult{Name: name, Verdict: v, Mode: m, FrameLen: 60, Program: res(prog), Baseline: res(base), NetNs: newStats(net), Ratio: newStats(ratio)}
	}
	return Report{
		Date:      time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Kernel:    "6.18.0-test",
		CPU:       "Test CPU",
		CPUs:      2,
		GoVersion: "go1.26",
		Command:   "sluice bench -out 'bench/results'",
		Options:   Options{Repeat: 1 << 20, Samples: 3},
		Cases: []CaseResult{
			mk("lb/gue-hit", TX, Native, []float64{110, 112, 108}, []float64{65, 66, 64}),
			mk("pipe|name", TX, Generic, []float64{600, 610, 590}, []float64{580, 590, 575}),
			mk("ratelimit-drop", Drop, Native, []float64{80, 82, 79}, []float64{85, 86, 84}),
		},
	}
}

func TestStats(t *testing.T) {
	for _, tc := range []struct {
		in               []float64
		median, min, max float64
	}{
		{[]float64{3, 1, 2}, 2, 1, 3},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4},
		{[]float64{7}, 7, 7, 7},
	} {
		s := newStats(tc.in)
		if s.Median != tc.median || s.Min != tc.min || s.Max != tc.max {
			t.Errorf("newStats(%v) = %+v, want median %v min %v max %v", tc.in, s, tc.median, tc.min, tc.max)
		}
	}
	if s := newStats([]float64{3, 1, 2}); !reflect.DeepEqual(s.Samples, []float64{3, 1, 2}) {
		t.Errorf("samples reordered to %v: they are in round order", s.Samples)
	}
}

func TestReportJSONRoundTrip(t *testing.T) {
	rep := sampleReport()
	dir := t.TempDir()
	if err := rep.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, JSONFile))
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatalf("results.json does not decode: %v", err)
	}
	if !reflect.DeepEqual(back, rep) {
		t.Errorf("round trip changed the report:\n got %+v\nwant %+v", back, rep)
	}
	// Other tools read the file without this package: names, not codes.
	var generic map[string]any
	if err := json.Unmarshal(raw, &generic); err != nil {
		t.Fatal(err)
	}
	c0 := generic["cases"].([]any)[0].(map[string]any)
	if c0["verdict"] != "XDP_TX" || c0["mode"] != "native" || generic["kernel"] != "6.18.0-test" {
		t.Errorf("results.json spells case 0 as %v/%v, kernel %v", c0["verdict"], c0["mode"], generic["kernel"])
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 4 {
		t.Errorf("results dir holds %d files, want 4 and no temporaries", len(entries))
	}
}

func TestReportMarkdown(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	var rows []string
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "|") {
			rows = append(rows, line)
		}
	}
	if len(rows) != 2+3 {
		t.Fatalf("table has %d lines, want header, rule and 3 rows:\n%s", len(rows), md)
	}
	cells := func(row string) int { return strings.Count(strings.ReplaceAll(row, `\|`, ""), "|") - 1 }
	for _, r := range rows {
		if cells(r) != 8 {
			t.Errorf("row has %d cells, want 8: %s", cells(r), r)
		}
	}
	for _, want := range []string{
		"| lb/gue-hit | XDP_TX | native | 60 B | 110 | 65 | +45 (+44…+46) | 1.692 |",
		`| pipe\|name | XDP_TX | generic |`,
		"| ratelimit-drop | XDP_DROP | native | 60 B | 80 | 85 | -5 (-5…-4) | 0.941 |",
		"Linux 6.18.0-test",
		"](" + NetChartFile + ")",
		"](" + RatioChartFile + ")",
		"```sh\nsluice bench -out 'bench/results'\n```",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestReportTable(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("table has %d lines, want 4:\n%s", len(lines), b.String())
	}
	if !strings.Contains(lines[0], "net ns/pkt") || !strings.Contains(lines[1], "lb/gue-hit") || !strings.Contains(lines[1], "+45") {
		t.Errorf("table:\n%s", b.String())
	}
}

// barWidths finds the bars in a chart: runs of rows that hold pixels of a
// bar colour, each with its widest row, top to bottom.
func barWidths(img image.Image) (widths []int, negative []bool) {
	b := img.Bounds()
	inBar := false
	for y := b.Min.Y; y < b.Max.Y; y++ {
		n, neg := 0, false
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			c := [3]uint32{r >> 8, g >> 8, bl >> 8}
			switch c {
			case [3]uint32{uint32(colBar.R), uint32(colBar.G), uint32(colBar.B)}:
				n++
			case [3]uint32{uint32(colNegative.R), uint32(colNegative.G), uint32(colNegative.B)}:
				n++
				neg = true
			}
		}
		switch {
		case n > 0 && !inBar:
			widths, negative = append(widths, n), append(negative, neg)
		case n > 0:
			widths[len(widths)-1] = max(widths[len(widths)-1], n)
		}
		inBar = n > 0
	}
	return widths, negative
}

func TestReportCharts(t *testing.T) {
	rep := sampleReport()
	dir := t.TempDir()
	if err := rep.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	for _, chart := range []struct {
		file string
		ref  float64
		val  func(CaseResult) float64
	}{
		{NetChartFile, 0, func(c CaseResult) float64 { return c.NetNs.Median }},
		{RatioChartFile, 1, func(c CaseResult) float64 { return c.Ratio.Median }},
	} {
		f, err := os.Open(filepath.Join(dir, chart.file))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s does not decode as PNG: %v", chart.file, err)
		}
		if b := img.Bounds(); b.Dx() < 400 || b.Dy() < 100 {
			t.Errorf("%s is %v, too small to read", chart.file, b)
		}
		widths, negative := barWidths(img)
		if len(widths) != len(rep.Cases) {
			t.Fatalf("%s: found %d bars, want %d", chart.file, len(widths), len(rep.Cases))
		}
		// Bars are proportional to the distance from the reference line:
		// compare each bar's width per unit with the longest one's. The
		// tolerance covers rounding at both ends and the reference line,
		// drawn over the bars' base.
		longest := 0
		for i := range widths {
			if widths[i] > widths[longest] {
				longest = i
			}
		}
		unit := float64(widths[longest]) / math.Abs(chart.val(rep.Cases[longest])-chart.ref)
		for i, c := range rep.Cases {
			d := chart.val(c) - chart.ref
			if negative[i] != (d < 0) {
				t.Errorf("%s: bar %d (%s, %+.3f) drawn negative=%t", chart.file, i, c.Name, d, negative[i])
			}
			if want := math.Abs(d) * unit; math.Abs(float64(widths[i])-want) > 3 {
				t.Errorf("%s: bar %d (%s) is %d px wide, want about %.0f", chart.file, i, c.Name, widths[i], want)
			}
		}
	}
}

func TestDrawBarsEdgeCases(t *testing.T) {
	for name, bars := range map[string][]bar{
		"no bars":    nil,
		"all zero":   {{label: "z", text: "0"}},
		"long label": {{label: strings.Repeat("x", 100), value: 3, lo: 1, hi: 5, text: "3"}},
		"odd runes":  {{label: "é→ü", value: -2, lo: -3, hi: -1, text: "-2"}},
		"nan":        {{label: "nan", value: math.NaN(), lo: math.NaN(), hi: math.NaN(), text: "NaN"}},
	} {
		var b bytes.Buffer
		if err := drawBars(&b, name, bars, 0); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if _, err := png.Decode(&b); err != nil {
			t.Errorf("%s: output does not decode: %v", name, err)
		}
	}
}

func TestGlyphs(t *testing.T) {
	for r := rune(' '); r <= '~'; r++ {
		g, ok := glyphs[r]
		if !ok {
			t.Errorf("no glyph for %q", r)
			continue
		}
		for i, row := range g {
			if len(row) != 5 || strings.Trim(row, ".#") != "" {
				t.Errorf("glyph %q row %d is %q", r, i, row)
			}
		}
	}
}

func TestShellQuote(t *testing.T) {
	got := shellQuote([]string{"sluice", "bench", "-out", "bench/results", "it's", "a b", ""})
	want := `sluice bench -out bench/results 'it'\''s' 'a b' ''`
	if got != want {
		t.Errorf("shellQuote = %s, want %s", got, want)
	}
}

func TestParseMode(t *testing.T) {
	for _, m := range []Mode{Native, Generic} {
		got, err := ParseMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	if _, err := ParseMode("offload"); err == nil {
		t.Error("ParseMode(offload) succeeded")
	}
}
