package bench

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/sluice-dp/sluice/internal/testenv"
)

// TestLBCasesTakeTheirPath checks that every case's program, behind its
// shim, returns XDP_TX for its frame — for the floor this means both of its
// lookups hit — and that running it twice on the same buffer, as live frames
// do, still does: the shim restores what the program overwrote.
func TestLBCasesTakeTheirPath(t *testing.T) {
	testenv.RequirePriv(t)
	cases, res, err := LBCases(Native)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	if len(cases) != 5 {
		t.Fatalf("%d cases, want 5", len(cases))
	}
	for _, c := range cases {
		for _, prog := range []*ebpf.Program{c.Program, c.Baseline} {
			buf := append([]byte(nil), c.Frame...)
			for run := range 2 {
				opts := ebpf.RunOptions{Data: buf, DataOut: make([]byte, len(buf)+256)}
				v, err := prog.Run(&opts)
				if err != nil {
					t.Fatalf("%s: run %d: %v", c.Name, run, err)
				}
				if Verdict(v) != TX {
					t.Errorf("%s: run %d returned %s, want XDP_TX", c.Name, run, Verdict(v))
				}
				// Feed the output back, as a reused live-frames page would be.
				buf = opts.DataOut[len(opts.DataOut)-len(c.Frame):]
			}
		}
	}
}
