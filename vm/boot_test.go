package vm

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dp/sluice/internal/testenv"
)

// TestBootGuest boots each matrix kernel that is installed and runs a
// script in it: output, exit status, the mounts and the modules the tests
// rely on. It takes about 10 s per kernel under TCG, so it runs only with
// SLUICE_VM_TESTS=1 (`make test` stays fast); without the kernels or qemu it
// skips, since the VM runner is an optional tool path.
func TestBootGuest(t *testing.T) {
	testenv.SkipUnless(t, os.Getenv("SLUICE_VM_TESTS") == "1", "set SLUICE_VM_TESTS=1 to boot guests")
	testenv.SkipUnless(t, os.Geteuid() == 0, "booting a guest needs root (virtiofsd)")
	_, err := exec.LookPath("qemu-system-x86_64")
	testenv.SkipUnless(t, err == nil, "qemu-system-x86_64 not installed (scripts/vm-deps.sh)")
	_, err = FindVirtiofsd()
	testenv.SkipUnless(t, err == nil, "virtiofsd not installed (scripts/vm-deps.sh)")
	for _, series := range []string{"6.1", "6.12"} {
		t.Run(series, func(t *testing.T) {
			k, err := FindKernel(series, "/boot", "/lib/modules")
			testenv.SkipUnless(t, err == nil, "kernel not installed: "+series)
			var out bytes.Buffer
			r, err := NewRun(Config{
				Kernel:  k,
				Dir:     "/",
				Env:     GuestEnv(nil, []string{"MARK=it's here"}),
				Timeout: 90 * time.Second,
				// One boot, and a stall if /init never writes the
				// line the boot watchdog waits for.
				BootTimeout:  60 * time.Second,
				BootAttempts: 1,
				Accel:        "tcg",
				Output:       &out,
			})
			if err != nil {
				t.Fatal(err)
			}
			r.SetCommand([]string{"/bin/sh", "-c", `uname -r; echo "mark=$MARK priv=$SLUICE_REQUIRE_PRIV"
				grep -q ' /sys/fs/bpf bpf ' /proc/mounts && echo bpffs
				grep -q ' / virtiofs ro' /proc/mounts && echo root-ro
				touch /tmp/x && echo tmp-writable
				ip link add sluicevm0 type veth peer name sluicevm1 && echo veth
				exit 7`})
			res, err := r.Execute(context.Background())
			if err != nil {
				t.Fatalf("%v (logs in %s)", err, res.RunDir)
			}
			t.Cleanup(func() {
				if res.RunDir != "" {
					os.RemoveAll(res.RunDir)
				}
			})
			if res.ExitCode != 7 {
				t.Errorf("exit status %d, want 7", res.ExitCode)
			}
			want := k.Version + "\nmark=it's here priv=1\nbpffs\nroot-ro\ntmp-writable\nveth\n"
			if out.String() != want {
				t.Errorf("guest output\n%q\nwant\n%q", out.String(), want)
			}
			if res.RunDir == "" || !strings.Contains(res.RunDir, StateDir) {
				t.Errorf("run dir of a failed (non-zero) run not kept: %q", res.RunDir)
			}
		})
	}
}
