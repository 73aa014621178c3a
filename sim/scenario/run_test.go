package scenario

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-dp/sluice/dataplane/attach"
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
			for _, mode := range []attach.Mode{attach.Native, attach.Generic} {
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
func runChecked(t *testing.T, sc *Scenario, mode attach.Mode) *Result {
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
	res := runChecked(t, sc, attach.Generic)
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
		// The run's directory holds nothing else.
		os.Remove(filepath.Dir(p))
	}

	broken := strings.Replace(base, "client: {role: client}", "client: {role: client, sysctls: {net.ipv4.no_such_setting: 1}}", 1)
	sc, err = Parse("broken.yaml", []byte(broken))
	if err != nil {
		t.Fatal(err)
	}
	res, err = Run(context.Background(), sc, Options{Mode: attach.Native})
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
	res, err := Run(ctx, sc, Options{Mode: attach.Native})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run with a cancelled context: %v, want context.Canceled", err)
	}
	assertNoNamespaces(t, res.Prefix)
}

// udpScenario has a UDP echo server on port 5300 only, and asks for
// answers from 5300 and from 5301.
const udpScenario = `name: udp
description: UDP requests to a served and to an unserved port
nodes:
  client: {role: client}
  router: {role: router}
  server: {role: server}
links:
  - a: {node: client, addrs: [10.0.1.2/24]}
    b: {node: router, addrs: [10.0.1.1/24]}
  - a: {node: router, addrs: [10.0.2.1/24]}
    b: {node: server, addrs: [10.0.2.2/24]}
routes:
  - {node: client, dst: 0.0.0.0/0, via: 10.0.1.1}
  - {node: server, dst: 0.0.0.0/0, via: 10.0.2.1}
services:
  - {node: server, udp: 10.0.2.2:5300}
steps:
  - name: served
    udp:
      - {from: client, dst: 10.0.2.2:5300, requests: 40, timeout: 2s}
    expect:
      - delivery: {min_ok: 40}
  - name: unserved
    udp:
      - {from: client, dst: 10.0.2.2:5301, requests: 20, timeout: 200ms}
    expect:
      - delivery: {min_ok: 1}
`

// TestUDPDelivery checks that the delivery assertion counts UDP answers
// and fails when they do not come.
func TestUDPDelivery(t *testing.T) {
	testenv.RequirePriv(t)
	sc, err := Parse("udp.yaml", []byte(udpScenario))
	if err != nil {
		t.Fatal(err)
	}
	res := runChecked(t, sc, attach.Generic)
	if res == nil || len(res.Steps) != 2 {
		t.Fatalf("result %+v, want two steps", res)
	}
	served, unserved := res.Steps[0], res.Steps[1]
	if a := served.Assertions[0]; !a.Passed || !strings.Contains(a.Observed, "udp 40 answered, 0 unanswered") || served.Sent != 40 || served.Received != 40 {
		t.Errorf("served port: %+v, sent %d, received %d; want 40 of 40 answered", a, served.Sent, served.Received)
	}
	if a := unserved.Assertions[0]; a.Passed || !strings.Contains(a.Observed, "udp 0 answered, 20 unanswered") || unserved.Received != 0 {
		t.Errorf("unserved port: %+v, received %d; want a failure with 20 unanswered", a, unserved.Received)
	}
}
