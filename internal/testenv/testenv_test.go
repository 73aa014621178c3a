package testenv

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeTB records what a helper asked the test to do. Unlike the real
// testing.T, its Skipf and Fatalf return, which is enough to observe the
// policy: the helpers do nothing after calling them.
type fakeTB struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Skipf(format string, args ...any) {
	f.skipped = true
	f.msg = fmt.Sprintf(format, args...)
}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = true
	f.msg = fmt.Sprintf(format, args...)
}

func TestRequirePrivPolicy(t *testing.T) {
	denied := errors.New("create BPF array map: operation not permitted")
	cases := []struct {
		name          string
		probe         error
		strict        bool
		skip, fail    bool
		wantInMessage string
	}{
		{name: "privileged, lenient", probe: nil, strict: false},
		{name: "privileged, strict", probe: nil, strict: true},
		{name: "unprivileged, lenient", probe: denied, strict: false, skip: true, wantInMessage: "operation not permitted"},
		{name: "unprivileged, strict", probe: denied, strict: true, fail: true, wantInMessage: "SLUICE_REQUIRE_PRIV=1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeTB{}
			requirePriv(f, tc.probe, tc.strict)
			if f.skipped != tc.skip || f.failed != tc.fail {
				t.Fatalf("skipped=%v failed=%v, want skipped=%v failed=%v (message %q)", f.skipped, f.failed, tc.skip, tc.fail, f.msg)
			}
			if !strings.Contains(f.msg, tc.wantInMessage) {
				t.Errorf("message %q does not mention %q", f.msg, tc.wantInMessage)
			}
			if tc.fail && !strings.Contains(f.msg, tc.probe.Error()) {
				t.Errorf("failure message %q does not give the reason %q", f.msg, tc.probe)
			}
		})
	}
}

func TestStrictPrivReadsEnv(t *testing.T) {
	for _, tc := range []struct {
		val  string
		want bool
	}{{"1", true}, {"0", false}, {"", false}, {"yes", false}} {
		t.Setenv(RequirePrivEnv, tc.val)
		if got := strictPriv(); got != tc.want {
			t.Errorf("%s=%q: strictPriv() = %v, want %v", RequirePrivEnv, tc.val, got, tc.want)
		}
	}
}

func TestSkipUnlessNeverFails(t *testing.T) {
	t.Setenv(RequirePrivEnv, "1")
	f := &fakeTB{}
	SkipUnless(f, false, "clang not installed")
	if !f.skipped || f.failed {
		t.Fatalf("skipped=%v failed=%v, want a skip even under %s=1", f.skipped, f.failed, RequirePrivEnv)
	}
	if !strings.Contains(f.msg, "clang not installed") {
		t.Errorf("skip message %q lacks the reason", f.msg)
	}
	f = &fakeTB{}
	SkipUnless(f, true, "unused")
	if f.skipped || f.failed {
		t.Errorf("cond=true: skipped=%v failed=%v, want neither", f.skipped, f.failed)
	}
}

// TestRequirePriv checks the probe against the machine: as root with BPF it
// must let the test run, and as anyone else it must not.
func TestRequirePriv(t *testing.T) {
	err := privProbe()
	if os.Geteuid() != 0 && err == nil {
		t.Fatal("probe passed for a non-root process")
	}
	RequirePriv(t)
	if err != nil {
		t.Fatalf("RequirePriv returned although the probe failed: %v", err)
	}
}

func allowedCPUs(t *testing.T) []int {
	t.Helper()
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	var cpus []int
	for cpu := range cpuSetBits {
		if set.IsSet(cpu) {
			cpus = append(cpus, cpu)
		}
	}
	return cpus
}

func TestLockCPU(t *testing.T) {
	cpus := allowedCPUs(t)
	// The last allowed CPU is the interesting one: the scheduler would
	// otherwise favour low CPUs, which could make a broken pin look right.
	target := cpus[len(cpus)-1]
	LockCPU(t, target)
	if got := allowedCPUs(t); len(got) != 1 || got[0] != target {
		t.Fatalf("after LockCPU(%d) the thread may run on %v", target, got)
	}
	// Yield repeatedly so that a thread that was not really pinned (or a
	// goroutine that was not locked to it) gets a chance to move.
	for i := range 200 {
		runtime.Gosched()
		got, err := CurrentCPU()
		if err != nil {
			t.Fatal(err)
		}
		if got != target {
			t.Fatalf("iteration %d: running on cpu %d, pinned to %d", i, got, target)
		}
	}
}

func TestLockCPURestores(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpus := allowedCPUs(t)
	// Collect the cleanup instead of leaving it to the testing package, so
	// that it runs here, on the thread this test can inspect.
	f := &cleanupTB{}
	LockCPU(f, cpus[0])
	if f.failed != "" {
		t.Fatal(f.failed)
	}
	if got := allowedCPUs(t); len(got) != 1 {
		t.Fatalf("pinned thread may run on %v", got)
	}
	f.runCleanups()
	if f.failed != "" {
		t.Fatal(f.failed)
	}
	if got := allowedCPUs(t); len(got) != len(cpus) {
		t.Errorf("after cleanup the thread may run on %v, want %v", got, cpus)
	}
}

func TestLockCPURejectsForeignCPU(t *testing.T) {
	f := &fakeTB{}
	LockCPU(f, -1)
	if !f.failed || !strings.Contains(f.msg, "allowed CPUs") {
		t.Errorf("LockCPU(-1): failed=%v message %q", f.failed, f.msg)
	}
}

func TestLockAnyCPU(t *testing.T) {
	cpus := allowedCPUs(t)
	cpu := LockAnyCPU(t)
	if cpu != cpus[0] {
		t.Errorf("LockAnyCPU = %d, want the lowest allowed CPU %d", cpu, cpus[0])
	}
	if got := allowedCPUs(t); len(got) != 1 || got[0] != cpu {
		t.Errorf("after LockAnyCPU the thread may run on %v, want [%d]", got, cpu)
	}
}

// cleanupTB lets a test run LockCPU's cleanup on a thread it controls.
type cleanupTB struct {
	testing.TB
	cleanups []func()
	failed   string
}

func (c *cleanupTB) Helper()          {}
func (c *cleanupTB) Cleanup(f func()) { c.cleanups = append(c.cleanups, f) }
func (c *cleanupTB) Errorf(format string, args ...any) {
	c.failed = fmt.Sprintf(format, args...)
}
func (c *cleanupTB) Fatalf(format string, args ...any) {
	c.failed = fmt.Sprintf(format, args...)
}

func (c *cleanupTB) runCleanups() {
	for i := len(c.cleanups) - 1; i >= 0; i-- {
		c.cleanups[i]()
	}
}
