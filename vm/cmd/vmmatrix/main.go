// Command vmmatrix runs packages' tests inside a VM per kernel (through
// vmexec as `go test -exec`) and prints a kernel × package matrix of
// pass/fail/skip. `make vm-test KERNELS="6.1 6.12"` runs it.
//
//	go run ./vm/cmd/vmmatrix -kernels "6.1 6.12" ./dataplane/lb ./internal/pkttest
//
// The go test output of each kernel is kept in /var/tmp/sluice-vm/matrix-*/;
// failing packages' output is printed before the matrix and skipped tests
// with their reasons after it; vm.GuestSkips are not run in guests.
// Durations measured in the TCG guests mean nothing and are not reported.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/sluice-dp/sluice/vm"
)

func main() {
	kernels := flag.String("kernels", "6.1 6.12", "kernel series to run on")
	timeout := flag.Duration("timeout", 30*time.Minute, "go test -timeout per kernel")
	run := flag.String("run", "", "go test -run pattern")
	expand := flag.String("expand", "TestScenarios", "top-level tests whose subtests get their own rows (space-separated)")
	flag.Parse()
	pkgs := flag.Args()
	if len(pkgs) == 0 {
		pkgs = []string{"./..."}
	}
	failed, err := vm.RunMatrix(vm.MatrixOptions{Kernels: strings.Fields(*kernels), Patterns: pkgs, Timeout: *timeout, Run: *run, Expand: strings.Fields(*expand), Skips: vm.GuestSkips}, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmmatrix:", err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}
