package scenario

import (
	"strings"
	"testing"
	"time"

	"github.com/sluice-dp/sluice/dataplane/attach"
	"github.com/sluice-dp/sluice/internal/testenv"
	"github.com/sluice-dp/sluice/sim/traffic"
)

func TestAdmittedRate(t *testing.T) {
	load := func(d time.Duration) *ConnectLoad { return &ConnectLoad{From: "a", Duration: d} }
	data := &stepData{conns: []connOutcome{
		{from: "a", load: load(3 * time.Second), res: traffic.ConnectResult{
			PerSecond: []int{200, 200, 200}, OKPerSecond: []int{150, 60, 40}}},
		// Longer: its fourth second is not a whole second of both.
		{from: "a", load: load(3500 * time.Millisecond), res: traffic.ConnectResult{
			PerSecond: []int{100, 100, 100, 50}, OKPerSecond: []int{0, 45, 50, 30}}},
		// Another node's load, and a hold of this node: not counted.
		{from: "b", load: load(3 * time.Second), res: traffic.ConnectResult{PerSecond: []int{9, 9, 9}, OKPerSecond: []int{9, 9, 9}}},
		{from: "a", res: traffic.ConnectResult{PerSecond: []int{5}, OKPerSecond: []int{5}}},
	}}
	// Seconds 1 and 2: (60+45 + 40+50) / 2 = 97.5 a second.
	for _, c := range []struct {
		tol  float64
		pass bool
	}{{0.05, true}, {0.02, false}} {
		var res AssertionResult
		admittedRate(&AdmittedRateCheck{From: "a", Rate: 100, Tolerance: c.tol}, data, &res)
		if res.Passed != c.pass || !strings.HasPrefix(res.Observed, "97.5/s completed of 300.0/s attempted over seconds 1 to 2") {
			t.Errorf("tolerance %v: passed %t, observed %q; want passed %t at 97.5/s of 300/s", c.tol, res.Passed, res.Observed, c.pass)
		}
	}
}

func TestConnections(t *testing.T) {
	data := &stepData{conns: []connOutcome{
		{from: "a", load: &ConnectLoad{}, res: traffic.ConnectResult{Attempts: 5, OK: 3, Refused: 1, Timeout: 1}},
		{from: "a", res: traffic.ConnectResult{Attempts: 3, OK: 2, Failed: 1, Errors: map[string]int{"no route to host": 1}}},
		{from: "b", res: traffic.ConnectResult{Attempts: 7, OK: 7}},
	}}
	n := func(v int) *int { return &v }
	var res AssertionResult
	connections(&ConnectionsCheck{From: "a", OK: n(5), Refused: n(1), Timeout: n(1), Failed: n(1)}, data, &res)
	if !res.Passed || res.Observed != "8 attempts: ok 5, refused 1, timeout 1, failed 1; failures: 1× no route to host" {
		t.Errorf("passed %t, observed %q; want a pass with 8 attempts", res.Passed, res.Observed)
	}
	res = AssertionResult{}
	connections(&ConnectionsCheck{From: "a", OK: n(4)}, data, &res)
	if res.Passed || !strings.Contains(res.Observed, "ok 5 ✗") {
		t.Errorf("ok 4 of 5: passed %t, observed %q; want a failure marking ok", res.Passed, res.Observed)
	}
}

// TestChainIntactCountsBypass runs a chain [ratelimit, lb] whose rate
// limit admits one connection a second, sends ten SYNs, and checks that
// chain_intact sees the packets the LB never ran on.
func TestChainIntactCountsBypass(t *testing.T) {
	testenv.RequirePriv(t)
	src := strings.Replace(base, "steps:\n", `ratelimit:
  rules:
    - {dst: 192.0.2.1:80, rate: 1, action: drop}
chains:
  - {attach: lb1/router, programs: [ratelimit, lb]}
steps:
`, 1)
	src = strings.Replace(src, "dst: 192.0.2.1:80}", "dst: 192.0.2.1:80, flows: 10}", 1)
	src = strings.Replace(src, `      - encapsulation: {at: backend1/router}
      - counters: {values: {tx: 1}}
`, `      - chain_intact: {at: lb1/router, programs: [ratelimit, lb]}
      - chain_intact: {at: lb1/router, programs: [ratelimit]}
      - counters: {values: {chain.packets: 10, ratelimit.packets: 10, ratelimit.admitted: [1, 2], ratelimit.refused: [8, 9], tx: [1, 2]}}
`, 1)
	sc, err := Parse("bypass.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	res := runChecked(t, sc, attach.Generic)
	if res == nil || len(res.Steps) != 1 || len(res.Steps[0].Assertions) != 3 {
		t.Fatalf("result %+v, want one step with three assertions", res)
	}
	a := res.Steps[0].Assertions
	// A window boundary may fall inside the burst: then two are admitted.
	if a[0].Passed || !strings.Contains(a[0].Observed, "10 packets entered the chain") || !strings.Contains(a[0].Observed, "ratelimit 10, lb ") || !strings.Contains(a[0].Observed, "✗") {
		t.Errorf("[ratelimit, lb]: %+v; want a failure: the LB ran on fewer packets than entered", a[0])
	}
	if !a[1].Passed || !a[2].Passed {
		t.Errorf("[ratelimit] and counters: %+v, %+v; want both to pass", a[1], a[2])
	}
}

// TestChainTeardown runs a chain of all three programs and checks that
// its root, ratelimit, connlimit and the LB it runs, with their maps, are
// gone after the run, in both modes.
func TestChainTeardown(t *testing.T) {
	testenv.RequirePriv(t)
	src := strings.Replace(base, "steps:\n", `ratelimit:
  rules:
    - {dst: 192.0.2.1:80, rate: 1000}
connlimit:
  ports:
    - {port: 80, max: 10}
chains:
  - {attach: lb1/router, programs: [connlimit, ratelimit, lb]}
steps:
`, 1)
	src = strings.Replace(src, "counters: {values: {tx: 1}}", "counters: {values: {tx: 1, chain.packets: 1, ratelimit.admitted: 1, connlimit.syn_admitted: 1}}", 1)
	sc, err := Parse("chain.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []attach.Mode{attach.Native, attach.Generic} {
		t.Run(mode.String(), func(t *testing.T) {
			var held *bpfObjects
			testHooks.loaded = func(o bpfObjects) { held = &o }
			defer func() { testHooks.loaded = nil }()
			res := runChecked(t, sc, mode)
			if res == nil || !res.Passed() {
				var b strings.Builder
				if res != nil {
					res.WriteReport(&b)
				}
				t.Fatalf("run failed:\n%s", &b)
			}
			if held == nil {
				t.Fatal("the run reported no BPF objects before teardown")
			}
			// The chain's root, ratelimit, connlimit's XDP program and
			// the LB; in native mode also the XDP_PASS program on the
			// router's end of the link.
			wantProgs := map[attach.Mode]int{attach.Native: 5, attach.Generic: 4}[mode]
			if len(held.Progs) != wantProgs || len(held.Maps) < 10 {
				t.Errorf("held %d programs and %d maps before teardown, want %d programs and at least 10 maps", len(held.Progs), len(held.Maps), wantProgs)
			}
			assertBPFGone(t, *held)
		})
	}
}
