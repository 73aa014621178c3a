package vm

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// GuestSkip is a test the matrix does not run inside guests, for a reason
// that lies in emulation itself rather than in the kernel: the matrix
// reports it as skipped with that reason instead of running it.
type GuestSkip struct {
	Package string // import path
	Test    string // "TestScenarios/ratelimit": a top-level test and, optionally, one subtest
	Reason  string
}

// GuestSkips are the tests never run in guests. A TCG guest runs code many
// times slower than the host, and unevenly: a test whose assertion is a rate
// per second of wall-clock time measures the emulator there, not the code.
var GuestSkips = []GuestSkip{
	{Package: "github.com/sluice-dp/sluice/sim/scenario", Test: "TestScenarios/ratelimit",
		Reason: "asserts connection rates per second of wall-clock time, which a TCG guest cannot sustain"},
}

// skipPattern is go test's -skip pattern for the skips of the packages to
// run, "" when none applies. go test splits a pattern at slashes into one
// regular expression per test level, so the skips must share their
// top-level test (TestScenarios); anything else is refused rather than
// silently run.
func skipPattern(skips []GuestSkip, pkgs []string) (string, error) {
	top, subs := "", []string{}
	whole := false
	for _, s := range skips {
		if !slices.Contains(pkgs, s.Package) {
			continue
		}
		t, sub, nested := strings.Cut(s.Test, "/")
		if top != "" && t != top || strings.Contains(sub, "/") {
			return "", fmt.Errorf("guest skip %s: want one shared top-level test and at most one subtest level", s.Test)
		}
		top = t
		if !nested {
			whole = true
			continue
		}
		subs = append(subs, "^"+regexp.QuoteMeta(sub)+"$")
	}
	switch {
	case top == "":
		return "", nil
	case whole:
		return "^" + regexp.QuoteMeta(top) + "$", nil
	}
	return "^" + regexp.QuoteMeta(top) + "$/" + strings.Join(subs, "|"), nil
}
