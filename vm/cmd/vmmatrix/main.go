// Command vmmatrix runs packages' tests inside a VM per kernel (through
// vmexec as `go test -exec`) and prints a kernel × package matrix of
// pass/fail/skip. `make vm-test KERNELS="6.1 6.12"` runs it.
//
//	go run ./vm/cmd/vmmatrix -kernels "6.1 6.12" ./dataplane/lb ./internal/pkttest
//
// The go test output of each kernel is kept in /var/tmp/sluice-vm/matrix-*/;
// failing packages' output is printed after the matrix. Durations measured
// in the TCG guests mean nothing and are not reported.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluice-dp/sluice/vm"
)

func main() {
	kernels := flag.String("kernels", "6.1 6.12", "kernel series to run on")
	timeout := flag.Duration("timeout", 30*time.Minute, "go test -timeout per kernel")
	run := flag.String("run", "", "go test -run pattern")
	flag.Parse()
	pkgs := flag.Args()
	if len(pkgs) == 0 {
		pkgs = []string{"./..."}
	}
	os.Exit(matrix(strings.Fields(*kernels), pkgs, *timeout, *run))
}

func matrix(kernels, patterns []string, timeout time.Duration, run string) int {
	pkgs, err := listPackages(patterns)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmmatrix:", err)
		return 2
	}
	out, err := os.MkdirTemp(vm.StateDir, "matrix-")
	if err != nil && os.MkdirAll(vm.StateDir, 0o755) == nil {
		out, err = os.MkdirTemp(vm.StateDir, "matrix-")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmmatrix:", err)
		return 2
	}
	exe := filepath.Join(out, "vmexec")
	if b, err := exec.Command("go", "build", "-o", exe, "github.com/sluice-dp/sluice/vm/cmd/vmexec").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "vmmatrix: build vmexec: %v\n%s", err, b)
		return 2
	}
	cells := map[string]map[string]string{}
	var failures []string
	failed := false
	for _, series := range kernels {
		cells[series] = map[string]string{}
		k, err := vm.FindKernel(series, "/boot", "/lib/modules")
		if err != nil {
			for _, p := range pkgs {
				cells[series][p] = "skip (kernel not installed)"
			}
			fmt.Fprintln(os.Stderr, "vmmatrix:", err)
			continue
		}
		fmt.Fprintf(os.Stderr, "vmmatrix: %s (%s): go test %s\n", series, k.Version, strings.Join(pkgs, " "))
		args := []string{"test", "-json", "-count=1", "-p", "1", "-timeout", timeout.String(),
			"-exec", exe + " -kernel " + k.Version}
		if run != "" {
			args = append(args, "-run", run)
		}
		cmd := exec.Command("go", append(args, pkgs...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		_ = cmd.Run() // a failing test is a result, not an error
		_ = os.WriteFile(filepath.Join(out, series+".json"), stdout.Bytes(), 0o644)
		_ = os.WriteFile(filepath.Join(out, series+".stderr"), stderr.Bytes(), 0o644)
		res, err := vm.ParseTestJSON(&stdout)
		if err != nil {
			fmt.Fprintln(os.Stderr, "vmmatrix:", err)
		}
		for _, p := range pkgs {
			r := res[p]
			if r == nil {
				cells[series][p] = "FAIL (no result; see " + series + ".stderr)"
				failed = true
				continue
			}
			cells[series][p] = r.Cell()
			if r.Status == "fail" || r.Status == "" && !r.NoTests {
				failed = true
				failures = append(failures, fmt.Sprintf("=== %s on %s (%s)\n%s", p, series, k.Version, tail(r.Output.String(), 60)))
			}
		}
	}
	for _, f := range failures {
		fmt.Println(f)
	}
	fmt.Println()
	fmt.Println("Kernel matrix (results only; timing inside TCG guests is meaningless and not reported):")
	vm.FormatMatrix(os.Stdout, kernels, pkgs, cells)
	fmt.Println("go test output per kernel:", out)
	if failed {
		return 1
	}
	return 0
}

func listPackages(patterns []string) ([]string, error) {
	b, err := exec.Command("go", append([]string{"list"}, patterns...)...).Output()
	if err != nil {
		return nil, fmt.Errorf("go list %s: %w", strings.Join(patterns, " "), err)
	}
	var pkgs []string
	for _, p := range strings.Fields(string(b)) {
		// The runner's own tests boot VMs; they are not run inside one.
		if p == "github.com/sluice-dp/sluice/vm" || strings.HasPrefix(p, "github.com/sluice-dp/sluice/vm/") {
			continue
		}
		pkgs = append(pkgs, p)
	}
	return pkgs, nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines omitted)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
