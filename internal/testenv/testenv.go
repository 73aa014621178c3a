// Package testenv decides whether a test can run on this machine and prepares
// the calling thread for tests that observe per-CPU BPF state.
//
// The rule it enforces comes from the project's test policy: CI runs as root
// with SLUICE_REQUIRE_PRIV=1, and there a test that needs root or BPF must
// fail rather than skip, because a silent skip would make CI report success
// for tests that never ran. On a developer's unprivileged machine the same
// tests skip. Optional tools (clang, tshark, …) never turn a skip into a
// failure: SkipUnless is for those.
package testenv

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// RequirePrivEnv names the environment variable that makes RequirePriv fail
// instead of skip. `make test` sets it to "1" so that CI cannot pass with
// privileged tests silently skipped.
const RequirePrivEnv = "SLUICE_REQUIRE_PRIV"

// RequirePriv stops the test unless the process is root and can create BPF
// maps and load XDP programs. It fails the test when SLUICE_REQUIRE_PRIV=1
// and skips it otherwise. The probe runs once per process: BPF capability
// does not change while tests run, and loading a program per test would cost
// more than most tests do.
func RequirePriv(t testing.TB) {
	t.Helper()
	requirePriv(t, privProbe(), strictPriv())
}

// SkipUnless skips the test when cond is false, whatever SLUICE_REQUIRE_PRIV
// says. It is for prerequisites that CI may legitimately lack, such as an
// optional tool; a missing privilege must go through RequirePriv instead, or
// CI would hide it.
func SkipUnless(t testing.TB, cond bool, reason string) {
	t.Helper()
	if !cond {
		t.Skipf("skipped: %s", reason)
	}
}

// strictPriv reports whether a missing privilege must fail the test.
func strictPriv() bool {
	return os.Getenv(RequirePrivEnv) == "1"
}

// requirePriv applies the skip-or-fail policy to a probe result; it is split
// from RequirePriv so that the policy can be tested without changing the
// process's privileges or environment.
func requirePriv(t testing.TB, probeErr error, strict bool) {
	t.Helper()
	if probeErr == nil {
		return
	}
	if strict {
		t.Fatalf("test needs root and BPF, and %s=1 forbids skipping: %v", RequirePrivEnv, probeErr)
		return
	}
	t.Skipf("test needs root and BPF (set %s=1 to make this a failure): %v", RequirePrivEnv, probeErr)
}

// privProbe checks, once, what the privileged tests will actually do: create
// a map and load an XDP program. Checking the uid alone would pass in a
// container that is root but lacks CAP_BPF, and checking capabilities alone
// would pass where a seccomp or LSM policy still refuses bpf(2).
var privProbe = sync.OnceValue(func() error {
	if uid := os.Geteuid(); uid != 0 {
		return fmt.Errorf("not root (effective uid %d)", uid)
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; on newer ones
	// this is a no-op. A failure here shows up in the probes below.
	_ = rlimit.RemoveMemlock()

	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "sluice_probe",
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  4,
		MaxEntries: 1,
	})
	if err != nil {
		return fmt.Errorf("create BPF array map: %w", err)
	}
	m.Close()

	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "sluice_probe",
		Type: ebpf.XDP,
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 2), // XDP_PASS
			asm.Return(),
		},
		License: "GPL",
	})
	if err != nil {
		return fmt.Errorf("load XDP program: %w", err)
	}
	p.Close()
	return nil
})

// LockCPU pins the calling goroutine to one OS thread and that thread to cpu
// until the test ends. BPF_PROG_RUN executes an XDP or TC program on the
// calling CPU, so a test that reads back per-CPU map state (connection
// tables, counters) must know which CPU's slot the program wrote: pinning
// makes that slot fixed. Call it from the test's own goroutine, before any
// Run; the thread's previous affinity is restored and the goroutine unlocked
// in t.Cleanup.
func LockCPU(t testing.TB, cpu int) {
	t.Helper()
	runtime.LockOSThread()
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("lock to cpu %d: read thread affinity: %v", cpu, err)
		return
	}
	if cpu < 0 || cpu >= cpuSetBits || !old.IsSet(cpu) {
		runtime.UnlockOSThread()
		t.Fatalf("lock to cpu %d: not in this thread's allowed CPUs %s", cpu, cpuList(&old))
		return
	}
	pin(t, cpu, &old)
}

// LockAnyCPU is LockCPU on the lowest CPU this thread may run on, and returns
// that CPU. Use it when the test only needs some fixed CPU, so that it also
// runs in a cpuset that excludes CPU 0; index per-CPU map values with the
// returned number.
func LockAnyCPU(t testing.TB) int {
	t.Helper()
	runtime.LockOSThread()
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("lock to a cpu: read thread affinity: %v", err)
		return -1
	}
	for cpu := range cpuSetBits {
		if old.IsSet(cpu) {
			pin(t, cpu, &old)
			return cpu
		}
	}
	runtime.UnlockOSThread()
	t.Fatalf("lock to a cpu: this thread may run on no CPU")
	return -1
}

// cpuSetBits is how many CPUs a unix.CPUSet can name.
const cpuSetBits = int(unsafe.Sizeof(unix.CPUSet{})) * 8

// pin narrows the locked thread's affinity to cpu and registers the undo.
func pin(t testing.TB, cpu int, old *unix.CPUSet) {
	t.Helper()
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("lock to cpu %d: set thread affinity: %v", cpu, err)
		return
	}
	tid := unix.Gettid()
	restore := *old
	t.Cleanup(func() {
		// A cleanup can run on another goroutine (after a panic, or if
		// LockCPU was called off the test goroutine). Touching that
		// goroutine's thread would be wrong; leaving ours locked is safe,
		// because the runtime destroys a thread whose goroutine exits while
		// locked, so the narrowed affinity never reaches other goroutines.
		if got := unix.Gettid(); got != tid {
			t.Errorf("LockCPU cleanup ran on thread %d, not on the pinned thread %d: call LockCPU from the test goroutine", got, tid)
			return
		}
		if err := unix.SchedSetaffinity(0, &restore); err != nil {
			t.Errorf("restore thread affinity after LockCPU(%d): %v", cpu, err)
			return // stay locked, for the same reason as above
		}
		runtime.UnlockOSThread()
	})
}

// CurrentCPU returns the CPU the calling thread is running on at this
// instant. It is only stable after LockCPU; tests use it to confirm a pin.
func CurrentCPU() (int, error) {
	var cpu uint32
	_, _, errno := unix.RawSyscall(unix.SYS_GETCPU, uintptr(unsafe.Pointer(&cpu)), 0, 0)
	if errno != 0 {
		return -1, fmt.Errorf("getcpu: %w", errno)
	}
	return int(cpu), nil
}

// cpuList formats a CPU set as "0,2,3" for error messages.
func cpuList(s *unix.CPUSet) string {
	var b strings.Builder
	for cpu := range cpuSetBits {
		if s.IsSet(cpu) {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			fmt.Fprint(&b, cpu)
		}
	}
	if b.Len() == 0 {
		return "(none)"
	}
	return b.String()
}
