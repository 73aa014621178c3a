package scenario

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-dp/sluice/dataplane/lb"
	"github.com/sluice-dp/sluice/internal/testenv"
	"github.com/sluice-dp/sluice/sim/topo"
)

// TestScenarios runs every shipped scenario in native and in generic mode,
// so that `make test` proves what the scenarios claim, and checks that
// both runs placed every flow alike (consistency across repeated runs).
func TestScenarios(t *testing.T) {
	testenv.RequirePriv(t)
	files, err := filepath.Glob("../../scenarios/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios found: %v", err)
	}
	for _, f := range files {
		sc, err := Load(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(sc.Name, func(t *testing.T) {
			var runs []*Result
			for _, mode := range []lb.Mode{lb.Native, lb.Generic} {
				res := runChecked(t, sc, mode)
				if res == nil {
					continue
				}
				if !res.Passed() {
					var b strings.Builder
					res.WriteReport(&b)
					t.Errorf("%s mode failed:\n%s", mode, &b)
				}
				runs = append(runs, res)
			}
			if len(runs) == 2 {
				for i := range runs[0].Steps {
					a, b := runs[0].Steps[i], runs[1].Steps[i]
					if a.Placement != b.Placement {
						t.Errorf("step %q placed flows differently in native (%s) and generic (%s) mode", a.Name, a.Placement, b.Placement)
					}
				}
			}
		})
	}
}

// runChecked runs a scenario and checks that nothing of its topology is
// left afterwards.
func runChecked(t *testing.T, sc *Scenario, mode lb.Mode) *Result {
	t.Helper()
	res, err := Run(context.Background(), sc, Options{Mode: mode})
	if err != nil {
		t.Errorf("%s mode: %v", mode, err)
	}
	if res != nil {
		assertNoNamespaces(t, res.Prefix)
	}
	return res
}

func assertNoNamespaces(t *testing.T, prefix string) {
	t.Helper()
	if prefix == "" {
		t.Error("run reported no topology prefix")
		return
	}
	left, _ := filepath.Glob(filepath.Join(topo.NetnsDir, prefix+"-*"))
	if len(left) > 0 {
		t.Errorf("namespaces left behind: %v", left)
	}
}

// TestFailedRunCleansUp makes a scenario fail its assertion, and another
// fail while being built, and checks that both leave nothing behind and
// say why they failed.
func TestFailedRunCleansUp(t *testing.T) {
	testenv.RequirePriv(t)
	wrong := strings.Replace(base, "counters: {values: {tx: 1}}", "counters: {values: {tx: 2}}", 1)
	sc, err := Parse("wrong.yaml", []byte(wrong))
	if err != nil {
		t.Fatal(err)
	}
	res := runChecked(t, sc, lb.Generic)
	if res == nil || res.Passed() {
		t.Fatalf("a scenario expecting tx 2 for one packet passed: %+v", res)
	}
	if p, f := res.Counts(); p != 1 || f != 1 || !strings.Contains(res.Steps[0].Assertions[1].Observed, "tx 1 ✗") {
		t.Errorf("passed %d, failed %d, observed %q; want the encapsulation to pass and tx 1 reported against 2", p, f, res.Steps[0].Assertions[1].Observed)
	}
	for _, p := range res.Steps[0].Pcaps {
		// A failed step keeps its captures for a closer look.
		if _, err := os.Stat(p); err != nil {
			t.Errorf("pcap of the failed step: %v", err)
		}
		os.Remove(p)
	}

	broken := strings.Replace(base, "client: {role: client}", "client: {role: client, sysctls: {net.ipv4.no_such_setting: 1}}", 1)
	sc, err = Parse("broken.yaml", []byte(broken))
	if err != nil {
		t.Fatal(err)
	}
	res, err = Run(context.Background(), sc, Options{Mode: lb.Native})
	if err == nil || !strings.Contains(err.Error(), "no_such_setting") {
		t.Errorf("Run of a scenario that cannot be built: %v, want the sysctl named", err)
	}
	assertNoNamespaces(t, res.Prefix)
}

func TestCancelledRunCleansUp(t *testing.T) {
	testenv.RequirePriv(t)
	sc, err := Parse("base.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := Run(ctx, sc, Options{Mode: lb.Native})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run with a cancelled context: %v, want context.Canceled", err)
	}
	assertNoNamespaces(t, res.Prefix)
}
