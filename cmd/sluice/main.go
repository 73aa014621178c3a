// Command sluice is Sluice's command-line tool. This file only wires
// command lines to the packages that do the work:
//
//	sluice sim run [-mode M] [-json F] [-pcap-dir D] FILE...   scenarios (sim/scenario)
//	sluice sim clean                            delete namespaces of killed runs (sim/topo)
//	sluice bench [-out DIR] [-mode ...]         benchmarks (bench)
//
// Exit status: 0 on success, 1 when the command ran and failed, 2 for a
// bad command line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluice-dp/sluice/bench"
	"github.com/sluice-dp/sluice/dataplane/attach"
	"github.com/sluice-dp/sluice/sim/scenario"
	"github.com/sluice-dp/sluice/sim/topo"
)

func main() {
	ctx, stop := interruptible()
	status := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(status)
}

// interruptible returns a context cancelled by the first SIGINT, SIGTERM
// or SIGHUP, so that commands can delete their namespaces before exiting.
// After that first signal the default handling is restored: a second
// Ctrl-C ends the process at once, for when cleaning up itself hangs
// (`sluice sim clean` removes what is left).
func interruptible() (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		<-ctx.Done()
		stop()
	}()
	return ctx, stop
}

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

const usage = `Usage: sluice <command> [flags]

Commands:
  sim run      run YAML scenarios on real namespace topologies and report
  sim clean    delete the namespaces that killed simulator runs left behind
  bench        measure the load balancer's per-packet cost (results as JSON,
               Markdown and charts)

Run 'sluice <command> -h' for a command's flags.
`

// run executes one command line and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "sim":
		return runSim(ctx, args[1:], stdout, stderr)
	case "bench":
		return runBench(ctx, args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "sluice: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

// flags makes a command's flag set. Its usage text goes to stderr, with
// the error for a bad flag, or alone for -h.
func flags(name, synopsis, about string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s\n\n%s\n", synopsis, about)
		var hasFlags bool
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintf(fs.Output(), "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parse parses args and reports the exit status to return now, if any:
// -h (usage already printed by flag) succeeds, a bad flag or a stray
// argument is a usage error.
func parse(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, true
		}
		return exitUsage, true // flag has printed the error and the usage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		fs.Usage()
		return exitUsage, true
	}
	return 0, false
}

// modeFlag is an XDP attach mode given as native or generic.
type modeFlag struct{ mode attach.Mode }

func (m *modeFlag) String() string { return m.mode.String() }

func (m *modeFlag) Set(s string) error {
	switch s {
	case "native":
		m.mode = attach.Native
	case "generic":
		m.mode = attach.Generic
	default:
		return fmt.Errorf("want native or generic")
	}
	return nil
}

func runSim(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const simUsage = `Usage: sluice sim <command>

Commands:
  run     run scenario files (scenarios/*.yaml) and print a report
  clean   delete the network namespaces that simulator runs killed before
          their cleanup left behind (names "sl<6 hex digits>-<node>");
          namespaces of runs still going are kept
`
	if len(args) == 0 {
		fmt.Fprint(stderr, simUsage)
		return exitUsage
	}
	switch args[0] {
	case "run":
		return runSimRun(ctx, args[1:], stdout, stderr)
	case "clean":
		return runSimClean(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, simUsage)
		return exitOK
	}
	fmt.Fprintf(stderr, "sluice sim: unknown command %q\n\n%s", args[0], simUsage)
	return exitUsage
}

// simModeFlag is native, generic or both.
type simModeFlag struct{ modes []attach.Mode }

func (m *simModeFlag) String() string {
	if len(m.modes) == 2 {
		return "both"
	}
	if len(m.modes) == 1 {
		return m.modes[0].String()
	}
	return ""
}

func (m *simModeFlag) Set(s string) error {
	switch s {
	case "native":
		m.modes = []attach.Mode{attach.Native}
	case "generic":
		m.modes = []attach.Mode{attach.Generic}
	case "both":
		m.modes = []attach.Mode{attach.Native, attach.Generic}
	default:
		return fmt.Errorf("want native, generic or both")
	}
	return nil
}

func runSimRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("sluice sim run", "sluice sim run [-mode native|generic|both] [-json FILE] [-pcap-dir DIR] FILE...",
		`Validates every scenario file first (nothing runs if one is invalid), then
builds each scenario's topology of network namespaces, attaches the load
balancer, sends its traffic, checks its assertions and deletes everything
again. Prints progress, a report per run and a summary table; exits 0 only if
every assertion of every run passed. Needs root. The schema is in
docs/scenarios.md.`, stderr)
	mode := &simModeFlag{modes: []attach.Mode{attach.Native}}
	fs.Var(mode, "mode", "XDP attach `mode`: native (default), generic, or both (each scenario runs twice)")
	jsonPath := fs.String("json", "", "also write a machine-readable report to `FILE`")
	pcapDir := fs.String("pcap-dir", "", "write every capture to `DIR` as pcap (default: only failed steps', under $TMPDIR)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "sluice sim run: no scenario file given")
		fs.Usage()
		return exitUsage
	}
	scs, err := scenario.LoadAll(fs.Args())
	if err != nil {
		fmt.Fprintf(stderr, "sluice sim run: %v\n", err)
		return exitUsage
	}
	results, err := scenario.RunAll(ctx, scs, mode.modes, scenario.Options{PcapDir: *pcapDir}, stdout)
	if serr := scenario.WriteSummary(stdout, results); serr != nil {
		err = errors.Join(err, serr)
	}
	if *jsonPath != "" {
		if jerr := scenario.WriteJSON(*jsonPath, results); jerr != nil {
			err = errors.Join(err, jerr)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "sluice sim run: %v\n", err)
		return exitFail
	}
	for _, r := range results {
		if !r.Passed() {
			return exitFail
		}
	}
	return exitOK
}

func runSimClean(args []string, stdout, stderr io.Writer) int {
	fs := flags("sluice sim clean", "sluice sim clean",
		`Deletes every network namespace named like a simulator topology's that no
running process holds, and prints each one. Needs root.`, stderr)
	if status, done := parse(fs, args); done {
		return status
	}
	res, err := topo.CleanAll()
	for _, name := range res.Removed {
		fmt.Fprintf(stdout, "removed netns %s\n", name)
	}
	for _, b := range res.Busy {
		fmt.Fprintf(stdout, "kept netns %s: in use by pid %v\n", b.Name, b.PIDs)
	}
	if len(res.Removed) == 0 && len(res.Busy) == 0 && err == nil {
		fmt.Fprintln(stdout, "nothing to clean")
	}
	if err != nil {
		fmt.Fprintf(stderr, "sluice sim clean: %v\n", err)
		return exitFail
	}
	return exitOK
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flags("sluice bench", "sluice bench [-out DIR] [-mode native|generic] [-samples N] [-repeat N] [-tc-calls N] [-no-dsr]",
		`Measures the load balancer's per-packet cost against an empty program in
the same run (BPF_PROG_RUN with live frames on a veth), then the backend
agent's TC programs against an empty TC program (one run per syscall), then
HTTP requests per second through the full DSR path against the same client and
server talking directly, and writes the report as JSON, a Markdown table and
charts. Needs root.`, stderr)
	out := fs.String("out", bench.DefaultDir, "directory for the results")
	mode := &modeFlag{mode: attach.Native}
	fs.Var(mode, "mode", "XDP `mode` of the veth end that receives transmitted frames: native (default) or generic")
	samples := fs.Int("samples", 0, "timed batches per program (default 0: the bench package's)")
	repeat := fs.Uint("repeat", 0, "frames per timed batch (default 0: the bench package's)")
	noDSR := fs.Bool("no-dsr", false, "skip the HTTP requests-per-second comparison through the DSR path")
	tcCalls := fs.Int("tc-calls", 0, "TC cases: single-run syscalls per program and round (default 0: the bench package's)")
	if status, done := parse(fs, args); done {
		return status
	}
	if *repeat > math.MaxUint32 || *samples < 0 || *tcCalls < 0 {
		fmt.Fprintf(stderr, "sluice bench: -repeat %d, -samples %d or -tc-calls %d out of range\n", *repeat, *samples, *tcCalls)
		return exitUsage
	}
	benchMode := bench.Native
	if mode.mode == attach.Generic {
		benchMode = bench.Generic
	}

	// Labs of benchmark runs that were killed would otherwise pile up.
	stale, err := bench.CleanupStale()
	for _, name := range stale {
		fmt.Fprintf(stdout, "removed stale netns %s\n", name)
	}
	if err != nil {
		fmt.Fprintf(stderr, "sluice bench: %v\n", err)
		return exitFail
	}
	cases, resources, err := bench.XDPCases(benchMode)
	if err != nil {
		fmt.Fprintf(stderr, "sluice bench: %v\n", err)
		return exitFail
	}
	defer resources.Close()
	tcCases, agentResources, err := bench.AgentCases()
	if err != nil {
		fmt.Fprintf(stderr, "sluice bench: %v\n", err)
		return exitFail
	}
	defer agentResources.Close()
	suite := bench.Suite{
		Cases: cases, Options: bench.Options{Samples: *samples, Repeat: uint32(*repeat)},
		TC: tcCases, TCOptions: bench.TCOptions{Rounds: *samples, Calls: *tcCalls},
	}
	if !*noDSR {
		suite.DSR = &bench.DSROptions{Mode: benchMode}
	}
	_, err = bench.RunSuite(ctx, suite, *out, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "sluice bench: %v\n", err)
		return exitFail
	}
	return exitOK
}
