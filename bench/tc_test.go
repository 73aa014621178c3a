package bench

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/sluice-dp/sluice/internal/pkttest"
	"github.com/sluice-dp/sluice/internal/testenv"
)

// TestAgentCases measures the agent's TC cases briefly: every case passes
// its verdict and path checks, and the report shows them as TC cases.
func TestAgentCases(t *testing.T) {
	testenv.RequirePriv(t)
	cases, closer, err := AgentCases()
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	var progress strings.Builder
	res, err := CompareTC(context.Background(), cases, TCOptions{Rounds: 3, Calls: 500}, &progress)
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	if testing.Verbose() {
		os.Stdout.WriteString(progress.String())
	}
	if len(res) != len(cases) {
		t.Fatalf("%d results for %d cases", len(res), len(cases))
	}
	for _, r := range res {
		if r.Kind != KindTC || r.TCAction != "TC_ACT_OK" || r.verdictName() != "TC_ACT_OK" || r.receiver() != "-" {
			t.Errorf("%s: kind %q action %q", r.Name, r.Kind, r.TCAction)
		}
		if len(r.NetNs.Samples) != 3 || r.Program.Packets != 1500 || r.Baseline.NsPerPacket.Median <= 0 {
			t.Errorf("%s: %+v", r.Name, r)
		}
	}
	var md strings.Builder
	if err := (Report{TCOptions: &TCOptions{Rounds: 3, Calls: 500}, Cases: res}).WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "| agent reply rewrite v4 | TC_ACT_OK | - |") {
		t.Errorf("markdown:\n%s", md.String())
	}
}

// TestCompareTCRefusesWrongAction: a case whose program returns another
// action than the case says is refused before it is timed.
func TestCompareTCRefusesWrongAction(t *testing.T) {
	testenv.RequirePriv(t)
	shot, err := EmptyTCProgram(pkttest.TCActShot)
	if err != nil {
		t.Fatal(err)
	}
	defer shot.Close()
	frame, err := UDPFrame(18)
	if err != nil {
		t.Fatal(err)
	}
	_, err = CompareTC(context.Background(), []TCCase{{Name: "x", Program: shot, Frame: frame, Action: pkttest.TCActOK}}, TCOptions{Rounds: 1, Calls: 10}, nil)
	if err == nil || !strings.Contains(err.Error(), "unexpected verdict") {
		t.Fatalf("err %v, want unexpected verdict", err)
	}
}
