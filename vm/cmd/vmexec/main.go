// Command vmexec runs a program inside a VM booted on another kernel, for
// `go test -exec`:
//
//	go test -exec "go run github.com/sluice-dp/sluice/vm/cmd/vmexec -kernel 6.1" ./dataplane/lb
//
// The program (go test's test binary) is staged under /var/tmp, the guest
// runs it in the current directory with its arguments and the environment
// below, and vmexec exits with its exit status (125 when the guest could not
// run it or report back).
//
// Guest environment: PATH, HOME=/root, TMPDIR=/tmp, GOCACHE=/tmp/go-cache,
// SLUICE_REQUIRE_PRIV=1 (a test that needs BPF must fail, not skip, in the
// guest), every SLUICE_* variable of the caller (except SLUICE_VM_*), and
// each -env KEY=VALUE.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-dp/sluice/vm"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("vmexec", flag.ContinueOnError)
	kernel := fs.String("kernel", os.Getenv("SLUICE_VM_KERNEL"), "kernel series to boot, e.g. 6.1 or 6.12 (default $SLUICE_VM_KERNEL)")
	accel := fs.String("accel", "auto", "tcg, kvm or auto (KVM only after a trial boot with it worked)")
	timeout := fs.Duration("timeout", 0, "bound on boot+run (default: the test's -test.timeout plus 2m, else 20m)")
	mem := fs.Int("mem", 2048, "guest memory, MiB")
	cpus := fs.Int("cpus", 2, "guest CPUs")
	verbose := fs.Bool("v", false, "print the runner's progress on stderr")
	var envs multi
	fs.Var(&envs, "env", "extra KEY=VALUE for the guest's environment (repeatable)")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: vmexec -kernel SERIES [flags] program [args...]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if *kernel == "" || fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	argv := fs.Args()

	k, err := vm.FindKernel(*kernel, "/boot", "/lib/modules")
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmexec:", err)
		return 125
	}
	dir, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmexec:", err)
		return 125
	}
	t := *timeout
	if t == 0 {
		t = vm.TestTimeout(argv[1:], 2*time.Minute, 20*time.Minute)
	}
	cfg := vm.Config{
		Kernel:  k,
		Dir:     dir,
		Env:     vm.GuestEnv(os.Environ(), envs),
		Timeout: t,
		Memory:  *mem,
		CPUs:    *cpus,
		Accel:   *accel,
		Output:  os.Stdout,
	}
	if *verbose {
		cfg.Log = os.Stderr
	}
	r, err := vm.NewRun(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmexec:", err)
		return 125
	}
	prog, err := filepath.Abs(argv[0])
	if err == nil {
		prog, err = r.Stage(prog)
	}
	if err != nil {
		r.Cleanup()
		fmt.Fprintln(os.Stderr, "vmexec: stage program:", err)
		return 125
	}
	r.SetCommand(append([]string{prog}, argv[1:]...))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := r.Execute(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmexec:", err)
		if res.RunDir != "" {
			fmt.Fprintln(os.Stderr, "vmexec: guest logs kept in", res.RunDir)
		}
		return 125
	}
	if res.RunDir != "" {
		fmt.Fprintf(os.Stderr, "vmexec: exit status %d on %s; guest logs kept in %s\n", res.ExitCode, k.Version, res.RunDir)
	}
	return res.ExitCode
}
