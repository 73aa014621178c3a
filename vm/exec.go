package vm

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// ExitNoRun is Exec's exit status when the guest could not run the command
// or report its status back (no kernel, boot failure, timeout).
const ExitNoRun = 125

// ExecOptions configure Exec. Zero values take Config's defaults.
type ExecOptions struct {
	// Series is the kernel series to boot ("6.1", "6.12").
	Series string
	// Argv is the host program to run and its arguments.
	Argv []string
	// Env holds extra KEY=VALUE entries for the guest's environment, on top
	// of GuestEnv's.
	Env []string
	// Timeout bounds boot, run and power-off; 0 means the program's
	// -test.timeout plus 2 minutes when it has one, else 20 minutes.
	Timeout time.Duration
	// Accel, Memory and CPUs are as in Config.
	Accel        string
	Memory, CPUs int
	// Verbose sends the runner's progress to stderr.
	Verbose bool
}

// Exec runs o.Argv inside a guest booted on the newest installed kernel of
// o.Series, in the caller's working directory, the way `go test -exec`
// expects: the program (a test binary in go test's temporary directory,
// which the guest cannot see) is staged into the run directory first, the
// command's output goes to stdout, and the returned value is the exit status
// to exit with: the command's own, or ExitNoRun, with the reason and the
// kept logs' directory on stderr.
func Exec(ctx context.Context, o ExecOptions, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintln(stderr, "vmexec:", err)
		return ExitNoRun
	}
	if o.Series == "" || len(o.Argv) == 0 {
		return fail(fmt.Errorf("need a kernel series and a program"))
	}
	k, err := FindKernel(o.Series, "/boot", "/lib/modules")
	if err != nil {
		return fail(err)
	}
	dir, err := os.Getwd()
	if err != nil {
		return fail(err)
	}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = TestTimeout(o.Argv[1:], 2*time.Minute, 20*time.Minute)
	}
	cfg := Config{
		Kernel:  k,
		Dir:     dir,
		Env:     GuestEnv(os.Environ(), o.Env),
		Timeout: timeout,
		Memory:  o.Memory,
		CPUs:    o.CPUs,
		Accel:   o.Accel,
		Output:  stdout,
	}
	if o.Verbose {
		cfg.Log = stderr
	}
	r, err := NewRun(cfg)
	if err != nil {
		return fail(err)
	}
	prog, err := filepath.Abs(o.Argv[0])
	if err == nil {
		prog, err = r.Stage(prog)
	}
	if err != nil {
		r.Cleanup()
		return fail(fmt.Errorf("stage program: %w", err))
	}
	r.SetCommand(append([]string{prog}, o.Argv[1:]...))
	res, err := r.Execute(ctx)
	for i, last := range res.Stalled {
		fmt.Fprintf(stderr, "vmexec: boot %d on %s stalled and was retried; its last console line: %s\n", i+1, k.Version, last)
	}
	if err != nil {
		fail(err)
		if res.RunDir != "" {
			fmt.Fprintln(stderr, "vmexec: guest logs kept in", res.RunDir)
		}
		return ExitNoRun
	}
	if res.RunDir != "" {
		fmt.Fprintf(stderr, "vmexec: exit status %d on %s; guest logs kept in %s\n", res.ExitCode, k.Version, res.RunDir)
	}
	return res.ExitCode
}
