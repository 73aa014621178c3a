package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/sluice-dp/sluice/internal/testenv"
)

// testOpts keeps privileged tests short; the numbers they produce are not
// asserted, only their structure.
var testOpts = Options{Repeat: 1 << 16, Samples: 3}

func emptyProgram(t *testing.T, v Verdict) *ebpf.Program {
	t.Helper()
	testenv.RequirePriv(t)
	p, err := EmptyProgram(v)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func udpFrame(t *testing.T) []byte {
	t.Helper()
	f, err := UDPFrame(18)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestEmptyProgramVerdicts(t *testing.T) {
	frame := udpFrame(t)
	for _, v := range []Verdict{Drop, Pass, TX} {
		p := emptyProgram(t, v)
		got, err := p.Run(&ebpf.RunOptions{Data: frame})
		if err != nil {
			t.Fatal(err)
		}
		if Verdict(got) != v {
			t.Errorf("empty %s program returned %s", v, Verdict(got))
		}
	}
	for _, v := range []Verdict{Aborted, Redirect, 99} {
		if p, err := EmptyProgram(v); err == nil {
			p.Close()
			t.Errorf("EmptyProgram(%s) succeeded, want an error: there is no baseline for it", v)
		}
	}
}

// TestMeasureTransmits proves the runs are live frames that XDP_TX really
// sends: the receiving program counts every frame of every batch, including
// the discarded warm-up round, and nothing else, because the lab keeps the
// stack from sending frames of its own. The receiver of a veth drops frames
// when it cannot keep up (its ring holds 256), as it can when other tests
// load both CPUs, so a run with losses is repeated, at most three times;
// a run that loses frames must still report only frames the sink counted.
func TestMeasureTransmits(t *testing.T) {
	for _, mode := range []Mode{Native, Generic} {
		t.Run(mode.String(), func(t *testing.T) {
			lab := newLab(t, mode)
			prog := emptyProgram(t, TX)
			timed := uint64(testOpts.Samples) * uint64(testOpts.Repeat)
			total := timed + uint64(testOpts.Repeat) // with the warm-up round
			for attempt := 1; ; attempt++ {
				before, err := lab.Delivered()
				if err != nil {
					t.Fatal(err)
				}
				res, err := lab.Measure(prog, udpFrame(t), testOpts)
				if err != nil {
					t.Fatal(err)
				}
				after, err := lab.Delivered()
				if err != nil {
					t.Fatal(err)
				}
				if res.Packets != timed {
					t.Fatalf("packets %d, want %d samples of %d", res.Packets, testOpts.Samples, testOpts.Repeat)
				}
				checkSamples(t, res)
				counted := after - before
				ok := false
				switch {
				case res.Interrupted > 0:
					// Batches a signal cut short ran again, so the
					// sink counts their partial frames twice.
					ok = counted >= total
				case counted > total || res.Delivered > timed || res.Delivered > counted:
					t.Fatalf("sink counted %d frames and the result says %d delivered; want at most %d and %d: frames the program did not send were counted",
						counted, res.Delivered, total, timed)
				default:
					ok = counted == total && res.Delivered == timed
				}
				if ok {
					t.Logf("empty XDP_TX, %s receiver: %v ns/packet (kernel), %.1f (wall)", mode, res.NsPerPacket.Samples, res.WallNsPerPacket.Median)
					return
				}
				if attempt == 3 {
					t.Fatalf("sink counted %d of %d frames (%d of %d timed) in each of 3 runs", counted, total, res.Delivered, timed)
				}
				t.Logf("run %d: the receiver lost frames (sink counted %d of %d); again", attempt, counted, total)
			}
		})
	}
}

// checkSamples asserts what holds whatever the machine's speed: one sample
// per batch, none zero, and the kernel's time within the wall-clock time of
// the syscall that contains it.
func checkSamples(t *testing.T, res Result) {
	t.Helper()
	k, w := res.NsPerPacket.Samples, res.WallNsPerPacket.Samples
	if len(k) != testOpts.Samples || len(w) != testOpts.Samples {
		t.Fatalf("%d kernel and %d wall samples, want %d", len(k), len(w), testOpts.Samples)
	}
	for i := range k {
		if k[i] <= 0 {
			t.Errorf("sample %d: kernel says %v ns/packet", i, k[i])
		}
		if w[i] < k[i] {
			t.Errorf("sample %d: wall %.2f ns/packet below the kernel's %v, which it contains", i, w[i], k[i])
		}
	}
	if s := res.NsPerPacket; s.Min > s.Median || s.Median > s.Max {
		t.Errorf("stats out of order: %+v", s)
	}
}

func TestMeasureDropTransmitsNothing(t *testing.T) {
	lab := newLab(t, Native)
	res, err := lab.Measure(emptyProgram(t, Drop), udpFrame(t), testOpts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Delivered != 0 {
		t.Errorf("XDP_DROP delivered %d frames to the peer", res.Delivered)
	}
	checkSamples(t, res)
}

// noNamespacesLeft checks that no lab of this process outlives the call
// that made it.
func noNamespacesLeft(t *testing.T) {
	t.Helper()
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range entries {
		if pid, ok := labPID(e.Name()); ok && pid == os.Getpid() {
			t.Errorf("netns %s left behind", e.Name())
		}
	}
}

func TestCompareEmptyWithItself(t *testing.T) {
	frame := udpFrame(t)
	cases := []Case{
		{Name: "empty-tx", Program: emptyProgram(t, TX), Frame: frame, Verdict: TX, Mode: Native},
		{Name: "empty-tx-generic", Program: emptyProgram(t, TX), Frame: frame, Verdict: TX, Mode: Generic},
		{Name: "empty-drop", Program: emptyProgram(t, Drop), Frame: frame, Verdict: Drop, Mode: Native},
	}
	rep, err := Compare(context.Background(), cases, testOpts)
	noNamespacesLeft(t)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Cases) != len(cases) {
		t.Fatalf("%d results for %d cases", len(rep.Cases), len(cases))
	}
	timed := uint64(testOpts.Samples) * uint64(testOpts.Repeat)
	for i, c := range rep.Cases {
		if c.Name != cases[i].Name || c.Verdict != cases[i].Verdict || c.Mode != cases[i].Mode || c.FrameLen != len(frame) {
			t.Errorf("result %d is %s/%s/%s/%d, want case %s", i, c.Name, c.Verdict, c.Mode, c.FrameLen, cases[i].Name)
		}
		for _, r := range []Result{c.Program, c.Baseline} {
			if r.Packets != timed {
				t.Errorf("%s: %d packets, want %d", c.Name, r.Packets, timed)
			}
			wantDelivered := uint64(0)
			if c.Verdict == TX {
				wantDelivered = timed
			}
			if r.Interrupted == 0 && r.Delivered != wantDelivered {
				t.Errorf("%s: %d delivered, want %d", c.Name, r.Delivered, wantDelivered)
			}
			checkSamples(t, r)
		}
		if len(c.NetNs.Samples) != testOpts.Samples || len(c.Ratio.Samples) != testOpts.Samples {
			t.Errorf("%s: %d net and %d ratio samples, want %d", c.Name, len(c.NetNs.Samples), len(c.Ratio.Samples), testOpts.Samples)
		}
		for j, r := range c.Ratio.Samples {
			if !(r > 0) {
				t.Errorf("%s: ratio sample %d is %v", c.Name, j, r)
			}
		}
		// Not asserted: how near 1 the ratio is depends on the machine.
		t.Logf("%s: program %v, baseline %v ns/packet, net %+v, ratio %.3f",
			c.Name, c.Program.NsPerPacket.Median, c.Baseline.NsPerPacket.Median, c.NetNs.Median, c.Ratio.Median)
	}
	if rep.Kernel == "" || rep.Kernel == "unknown" || rep.GoVersion == "" || rep.CPUs <= 0 || rep.Date.IsZero() {
		t.Errorf("report lacks its environment: %+v", rep)
	}
	if rep.Options.Repeat != testOpts.Repeat || rep.Options.Samples != testOpts.Samples {
		t.Errorf("report options %+v, want %+v", rep.Options, testOpts)
	}
}

// TestCompareMeasuresTheProgram checks that the program side of a case is
// the case's program: one that does real work per packet must come out
// dearer than the empty program, by far more than the noise of these
// machines. It is the one timing the tests assert, and only its sign.
func TestCompareMeasuresTheProgram(t *testing.T) {
	testenv.RequirePriv(t)
	// A bounded loop of 2000 iterations, then XDP_DROP: several hundred
	// ns per packet more than the empty program, whose whole cost is under
	// a hundred here.
	slow, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.XDP,
		License: license,
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R1, 2000),
			asm.Sub.Imm(asm.R1, 1).WithSymbol("loop"),
			asm.JNE.Imm(asm.R1, 0, "loop"),
			asm.Mov.Imm(asm.R0, int32(Drop)),
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	// Big enough batches that a preemption of a few milliseconds, which
	// the kernel's figure includes on a preemptible kernel, cannot lift the
	// baseline to the loop's cost.
	opts := Options{Repeat: 1 << 16, Samples: 3}
	rep, err := Compare(context.Background(), []Case{{Name: "loop", Program: slow, Frame: udpFrame(t), Verdict: Drop}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	c := rep.Cases[0]
	if c.NetNs.Median <= 0 || c.Ratio.Median <= 1 {
		t.Errorf("2000-step loop: net %v ns, ratio %v over the empty program; want it dearer", c.NetNs.Samples, c.Ratio.Samples)
	}
	t.Logf("loop: net %v ns/packet, ratio %.1f", c.NetNs.Median, c.Ratio.Median)
}

// TestCompareNotDelivered takes GRO away from the generic lab's receiver,
// so that veth drops every XDP_TX frame: the case is measured again, then
// refused with ErrNotDelivered, never reported as a cost.
func TestCompareNotDelivered(t *testing.T) {
	lab := newLab(t, Generic)
	if err := lab.do(func() error { return setGRO(peerName, false) }); err != nil {
		t.Fatal(err)
	}
	tx, base := emptyProgram(t, TX), emptyProgram(t, TX)
	c := Case{Name: "lost", Program: tx, Frame: udpFrame(t), Verdict: TX, Mode: Generic}
	_, err := compareCase(context.Background(), lab, c, base, Options{Repeat: 1 << 10, Samples: 2}, nil)
	if !errors.Is(err, ErrNotDelivered) {
		t.Fatalf("err = %v, want ErrNotDelivered", err)
	}
	if want := fmt.Sprintf("(%d measurements)", deliveryAttempts); !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want it measured %d times", err, deliveryAttempts)
	}
}

func TestCompareRejectsWrongVerdict(t *testing.T) {
	drop := emptyProgram(t, Drop)
	_, err := Compare(context.Background(), []Case{{Name: "liar", Program: drop, Frame: udpFrame(t), Verdict: TX}}, testOpts)
	noNamespacesLeft(t)
	if !errors.Is(err, ErrVerdict) {
		t.Errorf("err = %v, want ErrVerdict", err)
	}
}

func TestCompareCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Compare(ctx, []Case{{Name: "tx", Program: emptyProgram(t, TX), Frame: udpFrame(t), Verdict: TX}}, testOpts)
	noNamespacesLeft(t)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestCompareValidates(t *testing.T) {
	tx := emptyProgram(t, TX)
	frame := udpFrame(t)
	ok := Case{Name: "ok", Program: tx, Frame: frame, Verdict: TX}
	with := func(f func(*Case)) []Case { c := ok; f(&c); return []Case{c} }
	for name, cases := range map[string][]Case{
		"no cases":      nil,
		"no name":       with(func(c *Case) { c.Name = "" }),
		"no program":    with(func(c *Case) { c.Program = nil }),
		"short frame":   with(func(c *Case) { c.Frame = frame[:13] }),
		"no baseline":   with(func(c *Case) { c.Verdict = Redirect }),
		"unknown mode":  with(func(c *Case) { c.Mode = 7 }),
		"same name":     {ok, ok},
		"bad options":   nil, // replaced below
		"batch too big": nil, // replaced below
	} {
		opts := testOpts
		switch name {
		case "bad options":
			cases, opts.Samples = []Case{ok}, -1
		case "batch too big":
			cases, opts.BatchSize = []Case{ok}, maxBatchSize+1
		}
		if _, err := Compare(context.Background(), cases, opts); err == nil {
			t.Errorf("%s: Compare succeeded", name)
		}
	}
	noNamespacesLeft(t)
}

func TestRun(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "results")
	var progress bytes.Buffer
	cases := []Case{{Name: "empty-tx", Program: emptyProgram(t, TX), Frame: udpFrame(t), Verdict: TX}}
	start := time.Now()
	rep, err := Run(context.Background(), cases, dir, &progress, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	noNamespacesLeft(t)
	out := progress.String()
	for _, want := range []string{"[1/1] empty-tx (XDP_TX, native, 60-byte frame)", "round 3/3: ", "[1/1] empty-tx: ", "program ns/pkt", "ratio", "results in " + dir} {
		if !strings.Contains(out, want) {
			t.Errorf("progress lacks %q:\n%s", want, out)
		}
	}
	if rep.Command == "" {
		t.Error("report has no command")
	}
	for _, f := range []string{JSONFile, MDFile, NetChartFile, RatioChartFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Error(err)
			continue
		}
		if st.Size() == 0 || st.ModTime().Before(start.Add(-time.Second)) {
			t.Errorf("%s: %d bytes, written %v", f, st.Size(), st.ModTime())
		}
	}
	t.Logf("progress:\n%s", out)
}
