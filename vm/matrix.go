package vm

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
)

// TestEvent is the part of a `go test -json` event the matrix uses.
type TestEvent struct {
	Action  string
	Package string
	Test    string
	Output  string
}

// PackageResult summarises one package's run on one kernel.
type PackageResult struct {
	Package                 string
	Status                  string // "pass", "fail", "skip"
	Passed, Failed, Skipped int    // top-level tests
	NoTests                 bool   // no test files
	Output                  strings.Builder
	// Tests holds every test and subtest that ended, by full name
	// ("TestScenarios/quickstart").
	Tests map[string]*TestResult
}

// TestResult is one test's or subtest's outcome.
type TestResult struct {
	Status string // "pass", "fail", "skip"
	// Reason is a skipped test's message: the last line it logged, without
	// the file:line prefix (testenv.SkipUnless says "skipped: <why>").
	Reason string
	last   string
}

// Cell is the matrix text of a test's result.
func (r *TestResult) Cell() string {
	switch r.Status {
	case "pass":
		return "pass"
	case "fail":
		return "FAIL"
	case "skip":
		return "skip (" + r.Reason + ")"
	}
	return "? (no result)"
}

// Cell is the matrix text of a result: pass/fail/skip with the reason.
func (p *PackageResult) Cell() string {
	switch {
	case p.NoTests:
		return "skip (no test files)"
	case p.Status == "fail" && p.Failed == 0 && p.Passed == 0:
		return "FAIL (build, boot or load)"
	case p.Status == "fail":
		return fmt.Sprintf("FAIL (%d failed, %d passed)", p.Failed, p.Passed)
	case p.Status == "skip":
		return "skip (all tests skipped)"
	case p.Status == "pass" && p.Skipped > 0:
		return fmt.Sprintf("pass (%d passed, %d skipped)", p.Passed, p.Skipped)
	case p.Status == "pass":
		return fmt.Sprintf("pass (%d tests)", p.Passed)
	}
	return "? (no result)"
}

// ParseTestJSON reads a `go test -json` stream and returns each package's
// result, keyed by import path. Lines that are not JSON (build errors go to
// stderr, but be lenient) are attached to no package.
func ParseTestJSON(r io.Reader) (map[string]*PackageResult, error) {
	res := map[string]*PackageResult{}
	get := func(pkg string) *PackageResult {
		p := res[pkg]
		if p == nil {
			p = &PackageResult{Package: pkg, Tests: map[string]*TestResult{}}
			res[pkg] = p
		}
		return p
	}
	test := func(p *PackageResult, name string) *TestResult {
		r := p.Tests[name]
		if r == nil {
			r = &TestResult{}
			p.Tests[name] = r
		}
		return r
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev TestEvent
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Package == "" {
			continue
		}
		p := get(ev.Package)
		top := ev.Test != "" && !strings.Contains(ev.Test, "/")
		switch ev.Action {
		case "output":
			p.Output.WriteString(ev.Output)
			if ev.Test == "" && strings.Contains(ev.Output, "[no test files]") {
				p.NoTests = true
			}
			if ev.Test != "" {
				if m := logLine.FindStringSubmatch(ev.Output); m != nil {
					test(p, ev.Test).last = m[1]
				}
			}
		case "pass", "fail", "skip":
			if ev.Test == "" {
				p.Status = ev.Action
				continue
			}
			r := test(p, ev.Test)
			r.Status = ev.Action
			if ev.Action == "skip" {
				r.Reason = strings.TrimPrefix(r.last, "skipped: ")
				if r.Reason == "" {
					r.Reason = "no reason given"
				}
			}
			if top {
				switch ev.Action {
				case "pass":
					p.Passed++
				case "fail":
					p.Failed++
				case "skip":
					p.Skipped++
				}
			}
		}
	}
	return res, sc.Err()
}

// logLine matches a line a test logged (t.Log, t.Skip, ...): indented,
// "file.go:NN: " and the message.
var logLine = regexp.MustCompile(`^\s+\S+\.go:\d+: (.*?)\s*$`)

// Skips lists a package's skipped tests, top-level ones and subtests of
// tests that ran, as "name: reason", sorted.
func (p *PackageResult) Skips() []string {
	var out []string
	for name, r := range p.Tests {
		if r.Status == "skip" {
			out = append(out, name+": "+r.Reason)
		}
	}
	sort.Strings(out)
	return out
}

// FormatMatrix writes the kernel × package table.
func FormatMatrix(w io.Writer, kernels []string, packages []string, cells map[string]map[string]string) {
	sort.Strings(packages)
	width := len("package")
	for _, p := range packages {
		width = max(width, len(p))
	}
	colw := make([]int, len(kernels))
	for i, k := range kernels {
		colw[i] = len(k)
		for _, p := range packages {
			colw[i] = max(colw[i], len(cells[k][p]))
		}
	}
	fmt.Fprintf(w, "%-*s", width, "package")
	for i, k := range kernels {
		fmt.Fprintf(w, "  %-*s", colw[i], k)
	}
	fmt.Fprintln(w)
	for _, p := range packages {
		fmt.Fprintf(w, "%-*s", width, p)
		for i, k := range kernels {
			c := cells[k][p]
			if c == "" {
				c = "-"
			}
			fmt.Fprintf(w, "  %-*s", colw[i], c)
		}
		fmt.Fprintln(w)
	}
}
