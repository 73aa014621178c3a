package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// StateDir holds the runner's per-run directories. It is under /var/tmp, not
// /tmp: the guest sees the host root through virtiofs, but its own /tmp is a
// tmpfs, so anything the guest must read is staged here.
const StateDir = "/var/tmp/sluice-vm"

// Config says what to boot and run.
type Config struct {
	Kernel Kernel
	// Dir is the working directory of the command in the guest (a host path:
	// the guest sees the host root).
	Dir string
	// Argv is the command; Argv[0] must be a path the guest can read, so not
	// under /tmp. Stage copies a host file into the run directory for this.
	Argv []string
	// Env is the command's complete environment (KEY=VALUE).
	Env []string
	// Timeout bounds the whole boot-run-poweroff; 0 means 10 minutes.
	Timeout time.Duration
	// BootTimeout bounds the time from starting qemu to /init starting the
	// command (BootedLine on the console); 0 means 3 minutes, which is many
	// times a normal TCG boot. A boot that stalls is abandoned and the
	// guest booted again, up to BootAttempts boots in all (0 means 3).
	BootTimeout  time.Duration
	BootAttempts int
	// Memory is the guest's memory in MiB; 0 means 2048. CPUs defaults to 2.
	Memory, CPUs int
	// Accel is "tcg", "kvm" or "auto" (the default): auto uses KVM only when
	// a trial guest has booted with it on this machine (see kvmWorks).
	Accel string
	// Output receives the command's combined stdout and stderr as it runs.
	Output io.Writer
	// Log, if set, receives the runner's own progress messages.
	Log io.Writer

	// Tools; zero values mean the Debian 12 locations.
	QEMU, Virtiofsd, Busybox string
}

// Result is what came back from the guest.
type Result struct {
	ExitCode int    // the command's exit status
	RunDir   string // kept when the run failed (logs, scripts); "" when removed
	// Stalled holds the last console line of each boot that stalled and
	// was retried (their consoles are console.<n>.log in the run directory).
	Stalled []string
}

// Run is a prepared run: its directory exists and files can be staged into
// it before Start.
type Run struct {
	cfg Config
	Dir string
}

// NewRun creates the run directory under StateDir.
func NewRun(cfg Config) (*Run, error) {
	if err := os.MkdirAll(StateDir, 0o755); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(StateDir, "run-"+cfg.Kernel.Version+"-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &Run{cfg: cfg, Dir: dir}, nil
}

// Stage copies the host file src into the run directory and returns its
// path, which the guest can read.
func (r *Run) Stage(src string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return "", err
	}
	dst := filepath.Join(r.Dir, filepath.Base(src))
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, st.Mode().Perm()|0o500)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return "", err
	}
	return dst, out.Close()
}

// SetCommand sets the command to run, typically after staging its program.
func (r *Run) SetCommand(argv []string) { r.cfg.Argv = argv }

// Cleanup removes the run directory.
func (r *Run) Cleanup() { os.RemoveAll(r.Dir) }

// Execute boots the guest, runs the command and powers the guest off. It
// returns the command's exit status, or an error when the guest could not
// run it or report back (boot failure, timeout). The run directory is
// removed on success (exit status 0); otherwise the logs in it are kept,
// its path is in the result, and large staged files are removed.
func (r *Run) Execute(ctx context.Context) (res Result, err error) {
	cfg := r.cfg
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.Memory == 0 {
		cfg.Memory = 2048
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 2
	}
	if cfg.Output == nil {
		cfg.Output = io.Discard
	}
	logf := func(format string, a ...any) {
		if cfg.Log != nil {
			fmt.Fprintf(cfg.Log, "vm: "+format+"\n", a...)
		}
	}
	defer func() {
		if err == nil && res.ExitCode == 0 {
			r.Cleanup()
			return
		}
		r.removeLarge()
		res.RunDir = r.Dir
	}()
	if len(cfg.Argv) == 0 {
		return res, errors.New("vm: no command")
	}
	if cfg.QEMU == "" {
		cfg.QEMU = "qemu-system-x86_64"
	}
	if cfg.Virtiofsd == "" {
		if cfg.Virtiofsd, err = FindVirtiofsd(); err != nil {
			return res, err
		}
	}
	if cfg.Busybox == "" {
		cfg.Busybox = "/bin/busybox"
	}
	if cfg.BootTimeout == 0 {
		cfg.BootTimeout = 3 * time.Minute
	}
	if cfg.BootAttempts == 0 {
		cfg.BootAttempts = 3
	}

	script := filepath.Join(r.Dir, "run.sh")
	if err := os.WriteFile(script, []byte(RunScript(cfg.Dir, cfg.Env, cfg.Argv)), 0o755); err != nil {
		return res, err
	}
	initrd := filepath.Join(r.Dir, "initrd.cpio")
	ir, err := CachedInitramfs(cfg.Kernel, cfg.Busybox, CacheDir, initrd)
	if err != nil {
		return res, err
	}
	if ir.Cached {
		logf("initramfs of %s from the cache (%s)", cfg.Kernel.Version, CacheDir)
	}
	if len(ir.Absent) > 0 {
		logf("kernel %s lacks modules %s", cfg.Kernel.Version, strings.Join(ir.Absent, " "))
	}

	accel := cfg.Accel
	if accel == "" || accel == "auto" {
		accel = "tcg"
		if ok, why := kvmWorks(ctx, cfg); ok {
			accel = "kvm"
		} else {
			logf("using TCG: %s", why)
		}
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	return r.boots(ctx, cfg, accel, initrd, script)
}

// boots boots the guest until one boot does not stall, at most
// cfg.BootAttempts times. Nothing of the command has run in a boot that
// stalled, so booting again is safe.
func (r *Run) boots(ctx context.Context, cfg Config, accel, initrd, script string) (Result, error) {
	var stalls []string
	for n := 1; ; n++ {
		res, err := r.boot(ctx, cfg, accel, initrd, script)
		var stall *bootStall
		if !errors.As(err, &stall) || n >= cfg.BootAttempts {
			res.Stalled = stalls
			return res, err
		}
		kept := filepath.Join(r.Dir, fmt.Sprintf("console.%d.log", n))
		_ = os.Rename(filepath.Join(r.Dir, "console.log"), kept)
		stalls = append(stalls, stall.last)
		if cfg.Log != nil {
			fmt.Fprintf(cfg.Log, "vm: boot %d of %d stalled (%v); its console is in %s; booting again\n", n, cfg.BootAttempts, stall, kept)
		}
	}
}

// ErrBootStalled means a guest did not reach /init's command within the
// boot timeout, on every attempt.
var ErrBootStalled = errors.New("vm: guest boot stalled")

// bootStall is one boot that stalled; last is the console's last line.
type bootStall struct {
	timeout time.Duration
	last    string
}

func (s *bootStall) Error() string {
	return fmt.Sprintf("%v: /init did not start the command within %v; last console line: %q", ErrBootStalled, s.timeout, s.last)
}

func (s *bootStall) Unwrap() error { return ErrBootStalled }

// boot runs one guest: virtiofsd, then qemu, until the guest reports the
// command's exit status, the context ends, or the console shows no start of
// the command within cfg.BootTimeout (a *bootStall).
func (r *Run) boot(ctx context.Context, cfg Config, accel, initrd, script string) (res Result, err error) {
	sock := filepath.Join(r.Dir, "virtiofs.sock")
	_ = os.Remove(sock)
	vlog, err := os.OpenFile(filepath.Join(r.Dir, "virtiofsd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return res, err
	}
	defer vlog.Close()
	vcmd := exec.Command(cfg.Virtiofsd, "--socket-path="+sock, "-o", "source=/", "-o", "cache=auto", "-o", "sandbox=chroot")
	vcmd.Stdout, vcmd.Stderr = vlog, vlog
	vcmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := vcmd.Start(); err != nil {
		return res, fmt.Errorf("vm: start virtiofsd: %w", err)
	}
	defer func() {
		killGroup(vcmd)
		_ = vcmd.Wait()
	}()
	if err := waitForSocket(ctx, sock, vcmd); err != nil {
		return res, fmt.Errorf("vm: virtiofsd: %w (log: %s)", err, filepath.Join(r.Dir, "virtiofsd.log"))
	}

	console := filepath.Join(r.Dir, "console.log")
	args, err := QEMUArgs(accel, cfg.Kernel.Image, initrd, sock, console, script, cfg.Memory, cfg.CPUs)
	if err != nil {
		return res, err
	}
	if err := os.WriteFile(filepath.Join(r.Dir, "qemu.cmd"), []byte(cfg.QEMU+" "+strings.Join(quoteAll(args), " ")+"\n"), 0o644); err != nil {
		return res, err
	}
	qerr, err := os.OpenFile(filepath.Join(r.Dir, "qemu.stderr"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return res, err
	}
	defer qerr.Close()
	qcmd := exec.Command(cfg.QEMU, args...)
	qcmd.Stderr = qerr
	qcmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := qcmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	if cfg.Log != nil {
		fmt.Fprintf(cfg.Log, "vm: booting %s (%s) in %s\n", cfg.Kernel.Version, accel, r.Dir)
	}
	if err := qcmd.Start(); err != nil {
		return res, fmt.Errorf("vm: start qemu: %w", err)
	}
	filter := &resultFilter{out: cfg.Output}
	var werr error
	qdone := make(chan struct{})
	go func() {
		_, _ = io.Copy(filter, out)
		werr = qcmd.Wait()
		close(qdone)
	}()
	defer func() {
		killGroup(qcmd)
		<-qdone
	}()
	stalled := make(chan *bootStall, 1)
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go func() {
		if s := watchBoot(wctx, console, cfg.BootTimeout); s != nil {
			stalled <- s
		}
	}()
	select {
	case <-qdone:
		filter.flush()
		if !filter.done {
			return res, fmt.Errorf("vm: guest ended without reporting an exit status (qemu: %v); see %s/console.log and qemu.stderr", werr, r.Dir)
		}
		res.ExitCode = filter.status
		return res, nil
	case s := <-stalled:
		return res, s
	case <-ctx.Done():
		killGroup(qcmd)
		<-qdone
		filter.flush()
		return res, fmt.Errorf("vm: guest did not finish within %v (%v); see %s/console.log", cfg.Timeout, ctx.Err(), r.Dir)
	}
}

// watchBoot polls the console file until it shows BootedLine (nil) or
// timeout passes without it (a *bootStall). A guest under TCG now and then
// hangs in early kernel boot and would otherwise hold the run until its
// whole timeout. It returns nil when ctx ends first.
func watchBoot(ctx context.Context, console string, timeout time.Duration) *bootStall {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		b, _ := os.ReadFile(console)
		if bytes.Contains(b, []byte(BootedLine)) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-deadline.C:
			b, _ = os.ReadFile(console)
			if bytes.Contains(b, []byte(BootedLine)) {
				return nil
			}
			lines := strings.Split(strings.TrimRight(string(b), "\r\n"), "\n")
			return &bootStall{timeout: timeout, last: strings.TrimSpace(lines[len(lines)-1])}
		case <-tick.C:
		}
	}
}

// removeLarge deletes the staged binaries and the initramfs of a kept run
// directory, leaving logs and scripts.
func (r *Run) removeLarge() {
	ents, _ := os.ReadDir(r.Dir)
	for _, e := range ents {
		switch filepath.Ext(e.Name()) {
		case ".log", ".sh", ".cmd", ".stderr":
			continue
		}
		os.Remove(filepath.Join(r.Dir, e.Name()))
	}
}

// QEMUArgs is the qemu command line of a guest: no devices but the two serial
// ports (console into a file, results on stdout) and the virtiofs share,
// whose vhost-user backend needs guest memory that is shared memfd. script,
// the guest path of the script /init runs, goes on the kernel command line
// (ScriptParam), so it must be one word.
func QEMUArgs(accel, image, initrd, sock, console, script string, memMiB, cpus int) ([]string, error) {
	if script == "" || strings.ContainsAny(script, " \t\n\"'\\") {
		return nil, fmt.Errorf("vm: script path %q: want a path without spaces or quotes, it goes on the kernel command line", script)
	}
	mem := strconv.Itoa(memMiB) + "M"
	cpu := "max"
	if accel == "kvm" {
		cpu = "host"
	}
	return []string{
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-machine", "q35", "-accel", accel, "-cpu", cpu,
		"-smp", strconv.Itoa(cpus), "-m", mem,
		"-object", "memory-backend-memfd,id=mem,size=" + mem + ",share=on",
		"-numa", "node,memdev=mem",
		"-kernel", image, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 rdinit=/init random.trust_cpu=on " + ScriptParam + "=" + script,
		"-chardev", "socket,id=fs0,path=" + sock,
		"-device", "vhost-user-fs-pci,chardev=fs0,tag=" + ShareTag,
		"-serial", "file:" + console,
		"-serial", "stdio",
	}, nil
}

func quoteAll(a []string) []string {
	q := make([]string, len(a))
	for i, s := range a {
		q[i] = ShellQuote(s)
	}
	return q
}

// FindVirtiofsd returns the virtiofs daemon: the Rust one when installed,
// else the C one that Debian 12's qemu ships.
func FindVirtiofsd() (string, error) {
	for _, p := range []string{"/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd", "/usr/bin/virtiofsd"} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("vm: no virtiofsd found (run scripts/vm-deps.sh)")
}

// killGroup kills the process group of a command this package started (it
// was started with Setpgid, so the group id is its PID) unless the command
// has already been reaped. The caller reaps it.
func killGroup(c *exec.Cmd) {
	if c.Process == nil || c.ProcessState != nil {
		return
	}
	_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
}

func waitForSocket(ctx context.Context, sock string, c *exec.Cmd) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			return nil
		}
		if err := syscall.Kill(c.Process.Pid, 0); err != nil {
			return errors.New("exited before creating its socket")
		}
		if time.Now().After(deadline) {
			return errors.New("no socket after 10s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// resultFilter passes the guest's result-port stream through to out, minus
// the trailing "\n"+ResultMarker+status line, which it parses.
type resultFilter struct {
	out    io.Writer
	buf    []byte
	done   bool
	status int
}

var markerSeq = []byte("\n" + ResultMarker)

func (f *resultFilter) Write(p []byte) (int, error) {
	if f.done {
		return len(p), nil
	}
	f.buf = append(f.buf, p...)
	if i := bytes.Index(f.buf, markerSeq); i >= 0 {
		rest := f.buf[i+len(markerSeq):]
		nl := bytes.IndexByte(rest, '\n')
		if nl < 0 {
			f.out.Write(f.buf[:i])
			f.buf = f.buf[i:]
			return len(p), nil
		}
		f.out.Write(f.buf[:i])
		st, err := strconv.Atoi(strings.TrimSpace(string(rest[:nl])))
		if err != nil {
			st = 125
		}
		f.done, f.status, f.buf = true, st, nil
		return len(p), nil
	}
	// Keep back the longest tail that could start the marker.
	keep := 0
	for k := min(len(f.buf), len(markerSeq)-1); k > 0; k-- {
		if bytes.HasPrefix(markerSeq, f.buf[len(f.buf)-k:]) {
			keep = k
			break
		}
	}
	f.out.Write(f.buf[:len(f.buf)-keep])
	f.buf = append(f.buf[:0], f.buf[len(f.buf)-keep:]...)
	return len(p), nil
}

func (f *resultFilter) flush() {
	if !f.done && len(f.buf) > 0 {
		f.out.Write(f.buf)
		f.buf = nil
	}
}
