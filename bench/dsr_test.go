package bench

import (
	"context"
	"strings"
	"testing"

	"github.com/sluice-dp/sluice/internal/testenv"
)

// TestCompareDSR runs a short comparison: every request succeeds both ways
// and each round gives a ratio.
func TestCompareDSR(t *testing.T) {
	testenv.RequirePriv(t)
	var progress strings.Builder
	res, err := CompareDSR(context.Background(), DSROptions{Rounds: 2, Requests: 200, Connections: 4}, &progress)
	t.Log(progress.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Ratio.Samples) != 2 || res.LBRPS.Median <= 0 || res.DirectRPS.Median <= 0 {
		t.Errorf("result %+v", res)
	}
}

// TestReportDSR: a report with a DSR result shows it in the Markdown and
// the terminal table, and in the JSON.
func TestReportDSR(t *testing.T) {
	rep := Report{DSR: &DSRResult{
		Options: DSROptions{Rounds: 1, Requests: 10, Connections: 2},
		LBRPS:   newStats([]float64{900}), DirectRPS: newStats([]float64{1000}), Ratio: newStats([]float64{0.9}),
	}}
	var md, table, js strings.Builder
	if err := rep.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "| 900 | 1000 | 0.900 (0.900…0.900) |") {
		t.Errorf("markdown:\n%s", md.String())
	}
	if !strings.Contains(table.String(), "ratio 0.900") {
		t.Errorf("table:\n%s", table.String())
	}
	if !strings.Contains(js.String(), `"lb_rps"`) || strings.Contains(js.String(), `"tc_options"`) {
		t.Errorf("json:\n%s", js.String())
	}
}
