package bench

import (
	"maps"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/sluice-dp/sluice/dataplane/connlimit"
	"github.com/sluice-dp/sluice/internal/pkttest"
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
	if len(cases) != 6 {
		t.Fatalf("%d cases, want 6", len(cases))
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

// TestChainedLBCaseMatchesLB checks that the load balancer behind a chain
// root transmits the very frame the load balancer alone does, so the two
// cases measure the same work but for the root and its tail call.
func TestChainedLBCaseMatchesLB(t *testing.T) {
	testenv.RequirePriv(t)
	cases, res, err := LBCases(Native)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	out := map[string][]byte{}
	for _, c := range cases {
		opts := ebpf.RunOptions{Data: c.Frame, DataOut: make([]byte, len(c.Frame)+256)}
		if _, err := c.Program.Run(&opts); err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		out[c.Name] = opts.DataOut
	}
	alone, chained := out["lb gue v4 hit"], out["chain [lb] gue v4 hit"]
	if alone == nil || chained == nil {
		t.Fatalf("cases %v lack the load balancer alone or chained", slices.Collect(maps.Keys(out)))
	}
	pkttest.Expect(t, alone, chained)
}

// TestChainCasesTakeTheirPath checks the chain cases' verdicts: the root
// with no member passes, the root with the dropping member drops, which
// proves the tail call happened.
func TestChainCasesTakeTheirPath(t *testing.T) {
	testenv.RequirePriv(t)
	cases, res, err := ChainCases(Native)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	want := []Verdict{Pass, Drop}
	if len(cases) != len(want) {
		t.Fatalf("%d cases, want %d", len(cases), len(want))
	}
	for i, c := range cases {
		v, err := c.Program.Run(&ebpf.RunOptions{Data: c.Frame})
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		if Verdict(v) != want[i] || c.Verdict != want[i] {
			t.Errorf("%s: returned %s, case says %s, want %s", c.Name, Verdict(v), c.Verdict, want[i])
		}
	}
}

// TestPoliceCasesTakeTheirPath checks each policing case's verdict twice on
// the same buffer, as live frames run it, and that the rate limiter's RST
// case really transmits a RST to the SYN's sender.
func TestPoliceCasesTakeTheirPath(t *testing.T) {
	testenv.RequirePriv(t)
	cases, res, err := PoliceCases(Native)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	want := []Verdict{Pass, Drop, TX, Pass, Pass, Pass, Pass}
	if len(cases) != len(want) {
		t.Fatalf("%d cases, want %d", len(cases), len(want))
	}
	var cl *connlimit.Limiter
	for _, c := range res.(*resources).closers {
		if l, ok := c.(*connlimit.Limiter); ok {
			cl = l
		}
	}
	if cl == nil {
		t.Fatal("no connection limiter among the cases' resources")
	}
	established := func() uint64 {
		c, err := cl.Counters()
		if err != nil {
			t.Fatal(err)
		}
		return c["ack_established"]
	}
	for i, c := range cases {
		before := established()
		if _, err := c.Program.Run(&ebpf.RunOptions{Data: c.Frame, Repeat: c.Warmup}); err != nil {
			t.Fatalf("%s: warm-up: %v", c.Name, err)
		}
		for run := range 2 {
			opts := ebpf.RunOptions{Data: c.Frame, DataOut: make([]byte, len(c.Frame)+256)}
			v, err := c.Program.Run(&opts)
			if err != nil {
				t.Fatalf("%s: run %d: %v", c.Name, run, err)
			}
			if Verdict(v) != want[i] {
				t.Errorf("%s: run %d returned %s, want %s", c.Name, run, Verdict(v), want[i])
			}
			out := gopacket.NewPacket(opts.DataOut, layers.LayerTypeEthernet, gopacket.Default)
			if c.Verdict == TX {
				tcp, _ := out.Layer(layers.LayerTypeTCP).(*layers.TCP)
				if tcp == nil || !tcp.RST || tcp.DstPort != 40000 {
					t.Errorf("%s: run %d transmitted %v, want a RST to port 40000", c.Name, run, out)
				}
			}
		}
		// Only the cached case hits the connection limiter's cache of
		// established flows, on every run (warm-up and two).
		wantHits := uint64(0)
		if c.Name == "connlimit ack (established, cached)" {
			wantHits = uint64(c.Warmup) + 2
		}
		if got := established() - before; got != wantHits {
			t.Errorf("%s: %d hits in the cache of established flows, want %d", c.Name, got, wantHits)
		}
	}
}

// TestXDPCasesHoldEveryCase checks that the suite `make bench` measures has
// the cases of LBCases, ChainCases and PoliceCases, each name once.
func TestXDPCasesHoldEveryCase(t *testing.T) {
	testenv.RequirePriv(t)
	cases, res, err := XDPCases(Native)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	names := map[string]int{}
	for _, c := range cases {
		names[c.Name]++
	}
	for _, want := range []string{"lb gue v4 hit", "chain [lb] gue v4 hit", "chain root + 1 tail call", "ratelimit syn refused (drop)", "connlimit ack (handshake check)"} {
		if names[want] != 1 {
			t.Errorf("case %q appears %d times, want once", want, names[want])
		}
	}
	if want := 6 + 2 + 7; len(cases) != want {
		t.Errorf("%d cases, want %d", len(cases), want)
	}
}
