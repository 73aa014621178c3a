package vm

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ProbeKVM reports whether qemu could use KVM: /dev/kvm opens, speaks API
// version 12 and creates a VM. This is necessary, not sufficient: on a
// nested paravirtual host these calls succeed while qemu still cannot run a
// Debian kernel, so "auto" acceleration also boots a trial guest once per
// kernel (see kvmWorks).
func ProbeKVM() (bool, string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false, fmt.Sprintf("open /dev/kvm: %v", err)
	}
	defer f.Close()
	const kvmGetAPIVersion, kvmCreateVM = 0xAE00, 0xAE01
	v, err := unix.IoctlRetInt(int(f.Fd()), kvmGetAPIVersion)
	if err != nil || v != 12 {
		return false, fmt.Sprintf("KVM_GET_API_VERSION: %d, %v", v, err)
	}
	vm, err := unix.IoctlRetInt(int(f.Fd()), kvmCreateVM)
	if err != nil {
		return false, fmt.Sprintf("KVM_CREATE_VM: %v", err)
	}
	unix.Close(vm)
	return true, ""
}

// kvmWorks decides, once per kernel version, whether a guest boots under
// KVM here: it runs /bin/true in a trial guest with -accel kvm and records
// the outcome in StateDir/kvm-<version> ("ok" or the reason it failed).
// Delete that file to probe again.
func kvmWorks(ctx context.Context, cfg Config) (bool, string) {
	if ok, why := ProbeKVM(); !ok {
		return false, why
	}
	cache := filepath.Join(StateDir, "kvm-"+cfg.Kernel.Version)
	if b, err := os.ReadFile(cache); err == nil {
		s := strings.TrimSpace(string(b))
		return s == "ok", "trial KVM boot failed earlier (" + cache + "): " + s
	}
	trial := cfg
	trial.Accel, trial.Argv, trial.Env, trial.Dir = "kvm", []string{"/bin/true"}, nil, "/"
	trial.Timeout, trial.Output, trial.Log = 60*time.Second, io.Discard, nil
	trial.BootAttempts = 1
	verdict := "ok"
	r, err := NewRun(trial)
	if err != nil {
		return false, err.Error()
	}
	res, err := r.Execute(ctx)
	switch {
	case err != nil:
		verdict = err.Error()
		if b, rerr := os.ReadFile(filepath.Join(r.Dir, "qemu.stderr")); rerr == nil && len(b) > 0 {
			verdict = strings.TrimSpace(string(b))
		}
	case res.ExitCode != 0:
		verdict = fmt.Sprintf("/bin/true exited %d", res.ExitCode)
	}
	r.Cleanup()
	_ = os.WriteFile(cache, []byte(verdict+"\n"), 0o644)
	return verdict == "ok", "trial KVM boot failed: " + verdict
}
