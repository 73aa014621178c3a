package bench

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/internal/pkttest"
)

// KindTC marks a CaseResult measured by [CompareTC]: a TC (sched_cls)
// program, timed one call at a time. Cases without a kind are XDP cases
// measured by [Compare].
const KindTC = "tc"

// TCOptions tune [CompareTC]. The zero value asks for the defaults.
type TCOptions struct {
	// Rounds is the number of timed rounds per case; the report gives the
	// median over rounds. Default DefaultSamples.
	Rounds int `json:"rounds"`
	// Calls is the number of test-run syscalls per program and round, each
	// running the program once (repeat = 1). Default DefaultTCCalls.
	Calls int `json:"calls"`
}

// DefaultTCCalls is the default of TCOptions.Calls. The kernel reports
// whole nanoseconds per call; 20,000 calls give a mean to well under 1 ns,
// and a round of a case (both sides) takes about 0.1 s.
const DefaultTCCalls = 20000

func (o TCOptions) withDefaults() (TCOptions, error) {
	if o.Rounds == 0 {
		o.Rounds = DefaultSamples
	}
	if o.Calls == 0 {
		o.Calls = DefaultTCCalls
	}
	if o.Rounds < 0 || o.Calls < 0 {
		return o, fmt.Errorf("tc options: %d rounds, %d calls", o.Rounds, o.Calls)
	}
	return o, nil
}

// TCCase is one TC program to compare with the empty TC program of its
// action.
type TCCase struct {
	// Name identifies the case in the report and the charts.
	Name string
	// Program is the SchedCLS program under test. CompareTC does not
	// close it.
	Program *ebpf.Program
	// Frame is the packet every call starts from: BPF_PROG_RUN builds a
	// fresh socket buffer from it for each syscall.
	Frame []byte
	// Action is what Program returns for Frame; CompareTC checks it first.
	Action pkttest.TCAction
	// Check, when set, runs after that first call and says whether the
	// program took the path the case is about (from its counters, say).
	Check func() error
}

// EmptyTCProgram loads a SchedCLS program that does nothing but return a.
func EmptyTCProgram(a pkttest.TCAction) (*ebpf.Program, error) {
	if a != pkttest.TCActOK && a != pkttest.TCActShot {
		return nil, fmt.Errorf("empty program for %s: only TC_ACT_OK and TC_ACT_SHOT have a baseline", a)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    "bench_empty_tc",
		Type:    ebpf.SchedCLS,
		License: license,
		Instructions: asm.Instructions{
			asm.LoadImm(asm.R0, int64(a), asm.DWord),
			asm.Return(),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("load empty tc program: %w", err)
	}
	return prog, nil
}

// CompareTC measures each TC case against the empty TC program of its
// action and returns one CaseResult of kind KindTC per case.
//
// BPF_PROG_RUN has no live-frames mode for TC, and with repeat > 1 the
// kernel runs the program again on the packet it has just rewritten, which
// for a decapsulating program means a different path from the second
// iteration on. So every syscall runs the program once, on a socket buffer
// built afresh from the frame, and the figure is the kernel's duration of
// that one run, averaged over Calls syscalls. Program and baseline alternate
// call by call (in the opposite order in every other round), on one pinned
// CPU, so both see the same caches, frequency and neighbours.
func CompareTC(ctx context.Context, cases []TCCase, opts TCOptions, progress io.Writer) ([]CaseResult, error) {
	if progress == nil {
		progress = io.Discard
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for i, c := range cases {
		switch {
		case c.Name == "":
			return nil, fmt.Errorf("tc case %d: no name", i)
		case seen[c.Name]:
			return nil, fmt.Errorf("tc case %s: name used twice", c.Name)
		case c.Program == nil:
			return nil, fmt.Errorf("tc case %s: no program", c.Name)
		case c.Program.Type() != ebpf.SchedCLS:
			return nil, fmt.Errorf("tc case %s: %s program, want SchedCLS", c.Name, c.Program.Type())
		case len(c.Frame) < 14:
			return nil, fmt.Errorf("tc case %s: %d-byte frame", c.Name, len(c.Frame))
		}
		seen[c.Name] = true
	}
	baselines := map[pkttest.TCAction]*ebpf.Program{}
	defer func() {
		for _, p := range baselines {
			p.Close()
		}
	}()

	var out []CaseResult
	err = onOneCPU(func() error {
		for n, c := range cases {
			base := baselines[c.Action]
			if base == nil {
				if base, err = EmptyTCProgram(c.Action); err != nil {
					return err
				}
				baselines[c.Action] = base
			}
			fmt.Fprintf(progress, "[tc %d/%d] %s (%s, %d-byte frame): %d rounds of %d calls, repeat 1\n",
				n+1, len(cases), c.Name, c.Action, len(c.Frame), opts.Rounds, opts.Calls)
			cr, err := compareTCCase(ctx, c, base, opts, progress)
			if err != nil {
				return fmt.Errorf("tc case %s: %w", c.Name, err)
			}
			fmt.Fprintf(progress, "[tc %d/%d] %s: %s ns/packet, baseline %s, net %s, ratio %.3f\n",
				n+1, len(cases), c.Name, fmtNs(cr.Program.NsPerPacket.Median), fmtNs(cr.Baseline.NsPerPacket.Median),
				fmtSigned(cr.NetNs.Median), cr.Ratio.Median)
			out = append(out, cr)
		}
		return nil
	})
	return out, err
}

func compareTCCase(ctx context.Context, c TCCase, base *ebpf.Program, opts TCOptions, progress io.Writer) (CaseResult, error) {
	for _, p := range []*ebpf.Program{c.Program, base} {
		ret, err := p.Run(&ebpf.RunOptions{Data: c.Frame, DataOut: make([]byte, len(c.Frame)+256)})
		if err != nil {
			return CaseResult{}, err
		}
		if got := pkttest.TCAction(int32(ret)); got != c.Action {
			return CaseResult{}, fmt.Errorf("program returned %s for the frame, case says %s: %w", got, c.Action, ErrVerdict)
		}
		if p == c.Program && c.Check != nil {
			if err := c.Check(); err != nil {
				return CaseResult{}, fmt.Errorf("%w: %w", ErrVerdict, err)
			}
		}
	}
	progs := []*ebpf.Program{c.Program, base}
	// A short warm-up round, discarded, fills caches and the branch
	// predictor for both sides.
	if _, _, err := tcRound(ctx, progs, c.Frame, opts.Calls/10+1, false); err != nil {
		return CaseResult{}, err
	}
	kernel := make([][]float64, 2)
	wall := make([][]float64, 2)
	for r := range opts.Rounds {
		k, w, err := tcRound(ctx, progs, c.Frame, opts.Calls, r%2 == 1)
		if err != nil {
			return CaseResult{}, err
		}
		for i := range progs {
			kernel[i] = append(kernel[i], k[i])
			wall[i] = append(wall[i], w[i])
		}
		fmt.Fprintf(progress, "      round %d/%d: %s ns/packet, baseline %s\n", r+1, opts.Rounds, fmtNs(k[0]), fmtNs(k[1]))
	}
	results := make([]Result, 2)
	for i := range progs {
		results[i] = Result{
			NsPerPacket:     newStats(kernel[i]),
			WallNsPerPacket: newStats(wall[i]),
			Packets:         uint64(opts.Rounds) * uint64(opts.Calls),
		}
	}
	var net, ratio []float64
	for r := range kernel[0] {
		p, b := kernel[0][r], kernel[1][r]
		net = append(net, p-b)
		if b > 0 {
			ratio = append(ratio, p/b)
		}
	}
	return CaseResult{
		Name:     c.Name,
		Kind:     KindTC,
		TCAction: c.Action.String(),
		FrameLen: len(c.Frame),
		Program:  results[0],
		Baseline: results[1],
		NetNs:    newStats(net),
		Ratio:    newStats(ratio),
	}, nil
}

// tcRound runs each program calls times, one run per syscall, alternating
// between them call by call (starting with the last one when reversed), and
// returns each one's mean kernel-reported and wall-clock ns per run.
func tcRound(ctx context.Context, progs []*ebpf.Program, frame []byte, calls int, reversed bool) (kernel, wall []float64, err error) {
	kSum := make([]time.Duration, len(progs))
	wSum := make([]time.Duration, len(progs))
	for n := range calls {
		if n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, nil, err
			}
		}
		for j := range progs {
			i := j
			if reversed {
				i = len(progs) - 1 - j
			}
			start := time.Now()
			_, d, err := progs[i].Benchmark(frame, 1, nil)
			wSum[i] += time.Since(start)
			if err != nil {
				return nil, nil, err
			}
			kSum[i] += d
		}
	}
	for i := range progs {
		kernel = append(kernel, float64(kSum[i])/float64(calls))
		wall = append(wall, float64(wSum[i])/float64(calls))
	}
	return kernel, wall, nil
}

// onOneCPU runs f on a goroutine locked to a thread pinned to one CPU (the
// highest-numbered one allowed; CPU 0 usually takes the most interrupts), so
// that caches and per-CPU state stay the same across all the calls of a
// measurement. The thread is discarded afterwards.
func onOneCPU(f func() error) error {
	done := make(chan error)
	go func() {
		runtime.LockOSThread()
		done <- func() error {
			var set unix.CPUSet
			if err := unix.SchedGetaffinity(0, &set); err != nil {
				return fmt.Errorf("get affinity: %w", err)
			}
			for cpu := len(set)*64 - 1; cpu >= 0; cpu-- {
				if set.IsSet(cpu) {
					var one unix.CPUSet
					one.Set(cpu)
					if err := unix.SchedSetaffinity(0, &one); err != nil {
						return fmt.Errorf("pin to cpu %d: %w", cpu, err)
					}
					break
				}
			}
			return f()
		}()
	}()
	return <-done
}
