package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/cilium/ebpf"
)

// Case is one program to compare with the empty program of its verdict.
type Case struct {
	// Name identifies the case in the report and the charts; keep it short.
	Name string
	// Program is the XDP program under test. Compare does not close it.
	Program *ebpf.Program
	// Frame is the packet every iteration starts from.
	Frame []byte
	// Verdict is what Program returns for Frame. Compare checks it with a
	// plain test run first and refuses the case if it differs.
	Verdict Verdict
	// Baseline, when set, replaces the empty program of Verdict: for a
	// program measured through a shim (see Restoring), the same shim
	// around the empty program.
	Baseline *ebpf.Program
	// Mode is how the receiving end of the veth runs XDP. It only matters
	// for XDP_TX: the program under test runs in the test-run harness
	// either way.
	Mode Mode
	// Warmup is how many times Compare runs Program on Frame before it
	// checks the verdict, for programs that keep state about the frame: a
	// rate limiter admits the first SYNs of a window, and the warm-up
	// spends that budget so the check sees the verdict of the steady state
	// the rounds measure. 0 checks the very first run.
	Warmup uint32
}

// CaseResult is a case's program and its baseline, measured in the same
// rounds.
type CaseResult struct {
	// Name, Verdict and Mode are the case's, so a report stands alone.
	// Verdict and Mode are an XDP case's; a case of Kind KindTC has
	// TCAction instead, and its Mode means nothing.
	Name    string  `json:"name"`
	Verdict Verdict `json:"verdict,omitempty"`
	Mode    Mode    `json:"mode"`
	// Kind is empty for an XDP case (measured by Compare) and KindTC for
	// a TC case (measured by CompareTC, one run per syscall).
	Kind string `json:"kind,omitempty"`
	// TCAction is a TC case's action, by its kernel name.
	TCAction string `json:"tc_action,omitempty"`
	// FrameLen is the frame's length in bytes: per-packet costs grow with
	// it wherever the kernel copies or the program reads the payload.
	FrameLen int `json:"frame_len"`
	// Program is the case's program as measured; Baseline is the empty
	// program of the same verdict, in the same rounds.
	Program  Result `json:"program"`
	Baseline Result `json:"baseline"`
	// NetNs is the program's cost over the baseline in ns per packet:
	// program minus baseline within each round, summarised over rounds.
	// Pairing by round, rather than subtracting the two medians, keeps a
	// slow round from counting on one side only.
	NetNs Stats `json:"net_ns"`
	// Ratio is program over baseline within each round.
	Ratio Stats `json:"ratio"`
}

// Report is everything one benchmark run measured, with what is needed to
// judge whether two reports can be compared at all.
type Report struct {
	Date      time.Time `json:"date"`
	Kernel    string    `json:"kernel"`
	CPU       string    `json:"cpu"`
	CPUs      int       `json:"cpus"`
	GoVersion string    `json:"go_version"`
	// Command is the command line that produced the report, so a reader
	// can run it again.
	Command string  `json:"command"`
	Options Options `json:"options"`
	// TCOptions are the options of the cases of kind KindTC, when there
	// are any.
	TCOptions *TCOptions   `json:"tc_options,omitempty"`
	Cases     []CaseResult `json:"cases"`
	// DSR is the requests-per-second comparison of CompareDSR, when run.
	DSR *DSRResult `json:"dsr,omitempty"`
}

// Compare measures each case against the empty program of its verdict, in
// interleaved rounds inside a lab created for the run and deleted before
// Compare returns. The zero Options give the defaults.
func Compare(ctx context.Context, cases []Case, opts Options) (Report, error) {
	return compare(ctx, cases, opts, io.Discard)
}

// Run is Compare for people: it prints a line as each case starts, one per
// round with both sides' figures, and one with the case's result; it
// writes the report's files to outDir (see [Report.WriteDir]; the default is
// DefaultDir when outDir is empty), and ends with the summary table. The
// report's Command is the running program's command line.
func Run(ctx context.Context, cases []Case, outDir string, progress io.Writer, opts Options) (Report, error) {
	return RunSuite(ctx, Suite{Cases: cases, Options: opts}, outDir, progress)
}

// Suite is everything RunSuite measures into one report.
type Suite struct {
	// Cases are XDP cases, measured by Compare with Options.
	Cases   []Case
	Options Options
	// TC are TC cases, measured by CompareTC with TCOptions after the XDP
	// cases; they join the report's cases with kind KindTC.
	TC        []TCCase
	TCOptions TCOptions
	// DSR, when set, also runs CompareDSR with these options.
	DSR *DSROptions
}

// RunSuite is Run for a whole suite: the XDP cases, then the TC cases, then
// the DSR comparison, all in one report.
func RunSuite(ctx context.Context, s Suite, outDir string, progress io.Writer) (Report, error) {
	if progress == nil {
		progress = io.Discard
	}
	if outDir == "" {
		outDir = DefaultDir
	}
	rep, err := compare(ctx, s.Cases, s.Options, progress)
	if err != nil {
		return rep, err
	}
	if len(s.TC) > 0 {
		tcOpts, err := s.TCOptions.withDefaults()
		if err != nil {
			return rep, err
		}
		tc, err := CompareTC(ctx, s.TC, tcOpts, progress)
		if err != nil {
			return rep, err
		}
		rep.TCOptions = &tcOpts
		rep.Cases = append(rep.Cases, tc...)
	}
	if s.DSR != nil {
		dsr, err := CompareDSR(ctx, *s.DSR, progress)
		if err != nil {
			return rep, fmt.Errorf("dsr: %w", err)
		}
		rep.DSR = &dsr
	}
	rep.Command = commandLine()
	if err := rep.WriteDir(outDir); err != nil {
		return rep, err
	}
	fmt.Fprintln(progress)
	if err := rep.WriteTable(progress); err != nil {
		return rep, fmt.Errorf("write summary table: %w", err)
	}
	fmt.Fprintf(progress, "\nresults in %s\n", outDir)
	return rep, nil
}

func compare(ctx context.Context, cases []Case, opts Options, progress io.Writer) (rep Report, err error) {
	opts, err = opts.withDefaults()
	if err != nil {
		return Report{}, err
	}
	if err := validate(cases); err != nil {
		return Report{}, err
	}
	rep = newReport(opts)

	// One lab per mode and one baseline per verdict, made when first
	// needed and released however compare returns.
	labs := map[Mode]*Lab{}
	baselines := map[Verdict]*ebpf.Program{}
	defer func() {
		for _, lab := range labs {
			err = errors.Join(err, lab.Close())
		}
		for _, p := range baselines {
			p.Close()
		}
	}()

	for n, c := range cases {
		lab := labs[c.Mode]
		if lab == nil {
			if lab, err = NewLab(c.Mode); err != nil {
				return Report{}, err
			}
			labs[c.Mode] = lab
		}
		base := c.Baseline
		if base == nil {
			base = baselines[c.Verdict]
		}
		if base == nil {
			if base, err = EmptyProgram(c.Verdict); err != nil {
				return Report{}, err
			}
			baselines[c.Verdict] = base
		}
		fmt.Fprintf(progress, "[%d/%d] %s (%s, %s, %d-byte frame): %d rounds of %d frames\n",
			n+1, len(cases), c.Name, c.Verdict, c.Mode, len(c.Frame), opts.Samples, opts.Repeat)
		round := func(r int, ns []float64) {
			fmt.Fprintf(progress, "      round %d/%d: %s ns/packet, baseline %s\n", r+1, opts.Samples, fmtNs(ns[0]), fmtNs(ns[1]))
		}
		cr, err := compareCase(ctx, lab, c, base, opts, round)
		if err != nil {
			return Report{}, fmt.Errorf("case %s: %w", c.Name, err)
		}
		fmt.Fprintf(progress, "[%d/%d] %s: %s ns/packet, baseline %s, net %s, ratio %.3f\n",
			n+1, len(cases), c.Name, fmtNs(cr.Program.NsPerPacket.Median), fmtNs(cr.Baseline.NsPerPacket.Median),
			fmtSigned(cr.NetNs.Median), cr.Ratio.Median)
		rep.Cases = append(rep.Cases, cr)
	}
	return rep, nil
}

func validate(cases []Case) error {
	if len(cases) == 0 {
		return errors.New("compare: no cases")
	}
	seen := map[string]bool{}
	for i, c := range cases {
		switch {
		case c.Name == "":
			return fmt.Errorf("case %d: no name", i)
		case seen[c.Name]:
			return fmt.Errorf("case %s: name used twice", c.Name)
		case c.Program == nil:
			return fmt.Errorf("case %s: no program", c.Name)
		case c.Program.Type() != ebpf.XDP:
			return fmt.Errorf("case %s: %s program, want XDP", c.Name, c.Program.Type())
		case len(c.Frame) < 14:
			return fmt.Errorf("case %s: %d-byte frame, shorter than an Ethernet header", c.Name, len(c.Frame))
		case c.Verdict != Drop && c.Verdict != Pass && c.Verdict != TX:
			return fmt.Errorf("case %s: no empty program for %s", c.Name, c.Verdict)
		case c.Mode != Native && c.Mode != Generic:
			return fmt.Errorf("case %s: unknown %s", c.Name, c.Mode)
		}
		seen[c.Name] = true
	}
	return nil
}

// deliveryAttempts bounds how often a case whose XDP_TX frames did not all
// reach the receiver is measured again. The receiving veth drops frames
// when its NAPI poll falls behind (its ring holds 256), which other load on
// the machine can cause; a measurement with losses is thrown away, since the
// lost frames did not cost the program what delivered ones do.
const deliveryAttempts = 3

// measureDelivered measures the program and the baseline interleaved; for
// an XDP_TX case it measures again while frames were lost, at most
// deliveryAttempts times, and then fails with ErrNotDelivered.
func measureDelivered(ctx context.Context, lab *Lab, c Case, base *ebpf.Program, opts Options, round func(int, []float64)) (prog, baseline Result, err error) {
	for attempt := 1; ; attempt++ {
		res, err := lab.interleave(ctx, []*ebpf.Program{c.Program, base}, c.Frame, opts, round)
		if err != nil {
			return Result{}, Result{}, err
		}
		prog, baseline = res[0], res[1]
		if c.Verdict != TX {
			return prog, baseline, nil
		}
		err = nil
		for _, r := range []struct {
			what string
			res  Result
		}{{"program", prog}, {"baseline", baseline}} {
			if r.res.Delivered < r.res.Packets {
				err = fmt.Errorf("%s: %d of %d frames reached %s's peer in netns %s (%d measurements): %w",
					r.what, r.res.Delivered, r.res.Packets, devName, lab.Name(), attempt, ErrNotDelivered)
				break
			}
		}
		if err == nil || attempt == deliveryAttempts {
			return prog, baseline, err
		}
	}
}

func compareCase(ctx context.Context, lab *Lab, c Case, base *ebpf.Program, opts Options, round func(int, []float64)) (CaseResult, error) {
	if c.Warmup > 0 {
		if _, err := lab.verdict(c.Program, c.Frame, c.Warmup); err != nil {
			return CaseResult{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	got, err := lab.verdict(c.Program, c.Frame, 1)
	if err != nil {
		return CaseResult{}, err
	}
	if got != c.Verdict {
		return CaseResult{}, fmt.Errorf("program returned %s for the frame, case says %s: %w", got, c.Verdict, ErrVerdict)
	}
	prog, baseline, err := measureDelivered(ctx, lab, c, base, opts, round)
	if err != nil {
		return CaseResult{}, err
	}
	var net, ratio []float64
	for i := range prog.NsPerPacket.Samples {
		p, b := prog.NsPerPacket.Samples[i], baseline.NsPerPacket.Samples[i]
		net = append(net, p-b)
		if b > 0 {
			ratio = append(ratio, p/b)
		}
	}
	return CaseResult{
		Name:     c.Name,
		Verdict:  c.Verdict,
		Mode:     c.Mode,
		FrameLen: len(c.Frame),
		Program:  prog,
		Baseline: baseline,
		NetNs:    newStats(net),
		Ratio:    newStats(ratio),
	}, nil
}

// commandLine returns how to run the current program again. Under `go run`
// the binary lives in a temporary build directory, so the command is given as
// the go run it came from rather than a path that no longer exists.
func commandLine() string {
	args := os.Args
	if len(args) == 0 {
		return ""
	}
	if strings.Contains(args[0], string(filepath.Separator)+"go-build") {
		bi, ok := debug.ReadBuildInfo()
		if ok && bi.Main.Path != "" && strings.HasPrefix(bi.Path, bi.Main.Path+"/") && !strings.HasSuffix(bi.Path, ".test") {
			run := []string{"go", "run", "." + strings.TrimPrefix(bi.Path, bi.Main.Path)}
			return shellQuote(append(run, args[1:]...))
		}
	}
	return shellQuote(args)
}

// shellQuote joins args so that a POSIX shell reads them back unchanged.
func shellQuote(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r))
		}) < 0 {
			quoted[i] = a
			continue
		}
		quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(quoted, " ")
}
