package vm

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// MatrixOptions configure RunMatrix.
type MatrixOptions struct {
	// Kernels are kernel series ("6.1", "6.12").
	Kernels []string
	// Patterns are go package patterns; the runner's own packages are left
	// out, since their tests boot VMs.
	Patterns []string
	// Timeout is go test's -timeout per kernel.
	Timeout time.Duration
	// Run is go test's -run pattern, if any.
	Run string
	// Expand names top-level tests whose subtests get rows of their own
	// ("TestScenarios": one row per scenario).
	Expand []string
	// Skips are tests not run in guests, reported as skipped with their
	// reason (normally GuestSkips).
	Skips []GuestSkip
}

// RunMatrix runs the packages' tests inside a VM per kernel, through
// vmexec as `go test -exec`, prints the failing packages' output and a
// kernel × package matrix to stdout and progress to stderr, and keeps each
// kernel's go test output in a directory under StateDir. It reports whether
// any package failed; err is for the runs it could not start at all.
func RunMatrix(opts MatrixOptions, stdout, stderr io.Writer) (failed bool, err error) {
	kernels, timeout, run := opts.Kernels, opts.Timeout, opts.Run
	pkgs, err := listPackages(opts.Patterns)
	if err != nil {
		return false, err
	}
	out, err := os.MkdirTemp(StateDir, "matrix-")
	if err != nil && os.MkdirAll(StateDir, 0o755) == nil {
		out, err = os.MkdirTemp(StateDir, "matrix-")
	}
	if err != nil {
		return false, fmt.Errorf("matrix output directory: %w", err)
	}
	exe := filepath.Join(out, "vmexec")
	if b, err := exec.Command("go", "build", "-o", exe, "github.com/sluice-dp/sluice/vm/cmd/vmexec").CombinedOutput(); err != nil {
		return false, fmt.Errorf("build vmexec: %w\n%s", err, b)
	}
	skip, err := skipPattern(opts.Skips, pkgs)
	if err != nil {
		return false, err
	}
	cells := map[string]map[string]string{}
	rows := slices.Clone(pkgs)
	var failures, skips []string
	for _, series := range kernels {
		cells[series] = map[string]string{}
		k, err := FindKernel(series, "/boot", "/lib/modules")
		if err != nil {
			for _, p := range pkgs {
				cells[series][p] = "skip (kernel not installed)"
			}
			fmt.Fprintln(stderr, "vmmatrix:", err)
			continue
		}
		fmt.Fprintf(stderr, "vmmatrix: %s (%s): go test %s\n", series, k.Version, strings.Join(pkgs, " "))
		args := []string{"test", "-json", "-count=1", "-p", "1", "-timeout", timeout.String(),
			"-exec", exe + " -kernel " + k.Version}
		if run != "" {
			args = append(args, "-run", run)
		}
		if skip != "" {
			args = append(args, "-skip", skip)
		}
		cmd := exec.Command("go", append(args, pkgs...)...)
		var goOut, goErr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &goOut, &goErr
		_ = cmd.Run() // a failing test is a result, not an error
		_ = os.WriteFile(filepath.Join(out, series+".json"), goOut.Bytes(), 0o644)
		_ = os.WriteFile(filepath.Join(out, series+".stderr"), goErr.Bytes(), 0o644)
		res, err := ParseTestJSON(&goOut)
		if err != nil {
			fmt.Fprintln(stderr, "vmmatrix:", err)
		}
		for _, p := range pkgs {
			r := res[p]
			if r == nil {
				cells[series][p] = "FAIL (no result; see " + series + ".stderr)"
				failed = true
				continue
			}
			cells[series][p] = r.Cell()
			for name, t := range r.Tests {
				top, sub, nested := strings.Cut(name, "/")
				if nested && !strings.Contains(sub, "/") && slices.Contains(opts.Expand, top) {
					row := p + " " + name
					if !slices.Contains(rows, row) {
						rows = append(rows, row)
					}
					cells[series][row] = t.Cell()
				}
			}
			for _, sk := range r.Skips() {
				skips = append(skips, fmt.Sprintf("%s  %s  %s", series, p, sk))
			}
			for _, gs := range opts.Skips {
				if gs.Package != p {
					continue
				}
				row := p + " " + gs.Test
				if !slices.Contains(rows, row) {
					rows = append(rows, row)
				}
				cells[series][row] = "skip (not run in guests)"
				skips = append(skips, fmt.Sprintf("%s  %s  %s: not run in guests: %s", series, p, gs.Test, gs.Reason))
			}
			if r.Status == "fail" || r.Status == "" && !r.NoTests {
				failed = true
				failures = append(failures, fmt.Sprintf("=== %s on %s (%s)\n%s", p, series, k.Version, tail(r.Output.String(), 60)))
			}
		}
	}
	for _, f := range failures {
		fmt.Fprintln(stdout, f)
	}
	fmt.Fprintln(stdout)
	fmt.Fprintln(stdout, "Kernel matrix (results only; timing inside TCG guests is meaningless and not reported):")
	FormatMatrix(stdout, kernels, rows, cells)
	if len(skips) > 0 {
		fmt.Fprintln(stdout, "\nSkipped tests (kernel, package, test: reason):")
		for _, s := range skips {
			fmt.Fprintln(stdout, "  "+s)
		}
	}
	fmt.Fprintln(stdout, "go test output per kernel:", out)
	return failed, nil
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
