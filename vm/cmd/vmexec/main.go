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
	"strings"
	"syscall"

	"github.com/sluice-dp/sluice/vm"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

func main() {
	fs := flag.NewFlagSet("vmexec", flag.ContinueOnError)
	var o vm.ExecOptions
	fs.StringVar(&o.Series, "kernel", os.Getenv("SLUICE_VM_KERNEL"), "kernel series to boot, e.g. 6.1 or 6.12 (default $SLUICE_VM_KERNEL)")
	fs.StringVar(&o.Accel, "accel", "auto", "tcg, kvm or auto (KVM only after a trial boot with it worked)")
	fs.DurationVar(&o.Timeout, "timeout", 0, "bound on boot+run (default: the test's -test.timeout plus 2m, else 20m)")
	fs.IntVar(&o.Memory, "mem", 2048, "guest memory, MiB")
	fs.IntVar(&o.CPUs, "cpus", 2, "guest CPUs")
	fs.BoolVar(&o.Verbose, "v", false, "print the runner's progress on stderr")
	var envs multi
	fs.Var(&envs, "env", "extra KEY=VALUE for the guest's environment (repeatable)")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: vmexec -kernel SERIES [flags] program [args...]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if o.Series == "" || fs.NArg() == 0 {
		fs.Usage()
		os.Exit(2)
	}
	o.Argv, o.Env = fs.Args(), envs

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := vm.Exec(ctx, o, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
