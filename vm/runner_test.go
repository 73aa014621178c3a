package vm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeTools writes a virtiofsd that only creates its socket and a qemu
// that, on the boots listed in stallOn (counted from 1), prints kernel
// messages to the console and hangs; on the others it prints BootedLine,
// the command's output and the result marker with status 3. Each qemu
// records its PID in dir/qemu.<boot>.pid.
func fakeTools(t *testing.T, stallOn ...int) (qemu, vfsd, dir string) {
	t.Helper()
	dir = t.TempDir()
	vfsd = filepath.Join(dir, "virtiofsd")
	qemu = filepath.Join(dir, "qemu")
	var stalls []string
	for _, n := range stallOn {
		stalls = append(stalls, strconv.Itoa(n))
	}
	write := func(p, body string) {
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(vfsd, `for a; do case $a in --socket-path=*) : >"${a#--socket-path=}" ;; esac; done
exec sleep 600
`)
	write(qemu, `console=
for a; do case $a in file:*) console=${a#file:} ;; esac; done
n=$(( $(cat `+dir+`/boots 2>/dev/null || echo 0) + 1 ))
echo $n >`+dir+`/boots
echo $$ >`+dir+`/qemu.$n.pid
echo "[    1.554893] IP idents hash table entries: 32768" >"$console"
case " `+strings.Join(stalls, " ")+` " in *" $n "*) exec sleep 600 ;; esac
echo "`+BootedLine+`/run.sh" >>"$console"
printf 'hello\n\n`+ResultMarker+`3\n'
`)
	return qemu, vfsd, dir
}

func fakeRun(t *testing.T, qemu, vfsd string, attempts int, out *bytes.Buffer) (*Run, Config) {
	cfg := Config{
		Kernel:       Kernel{Version: "0.0-fake", Image: "/nonexistent/vmlinuz"},
		Timeout:      time.Minute,
		BootTimeout:  time.Second,
		BootAttempts: attempts,
		Output:       out,
		QEMU:         qemu,
		Virtiofsd:    vfsd,
		Memory:       64,
		CPUs:         1,
	}
	return &Run{cfg: cfg, Dir: t.TempDir()}, cfg
}

func TestBootStallIsRetried(t *testing.T) {
	qemu, vfsd, dir := fakeTools(t, 1)
	var out bytes.Buffer
	r, cfg := fakeRun(t, qemu, vfsd, 3, &out)
	res, err := r.boots(context.Background(), cfg, "tcg", "/nonexistent/initrd", "/run.sh")
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 3 || out.String() != "hello\n" {
		t.Errorf("exit %d, output %q; want 3 and %q", res.ExitCode, out.String(), "hello\n")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "boots")); strings.TrimSpace(string(b)) != "2" {
		t.Errorf("qemu started %q times, want 2", strings.TrimSpace(string(b)))
	}
	want := []string{"[    1.554893] IP idents hash table entries: 32768"}
	if len(res.Stalled) != 1 || res.Stalled[0] != want[0] {
		t.Errorf("Stalled = %q, want %q", res.Stalled, want)
	}
	if b, err := os.ReadFile(filepath.Join(r.Dir, "console.1.log")); err != nil || bytes.Contains(b, []byte(BootedLine)) {
		t.Errorf("the stalled boot's console was not kept as console.1.log (%v): %q", err, b)
	}
	pid, err := os.ReadFile(filepath.Join(dir, "qemu.1.pid"))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(strings.TrimSpace(string(pid)))
	if err := syscall.Kill(p, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the stalled qemu (PID %d) still exists: kill 0 = %v", p, err)
	}
}

func TestBootStallGivesUp(t *testing.T) {
	qemu, vfsd, dir := fakeTools(t, 1, 2)
	var out bytes.Buffer
	r, cfg := fakeRun(t, qemu, vfsd, 2, &out)
	_, err := r.boots(context.Background(), cfg, "tcg", "/nonexistent/initrd", "/run.sh")
	if !errors.Is(err, ErrBootStalled) {
		t.Fatalf("err = %v, want ErrBootStalled", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "boots")); strings.TrimSpace(string(b)) != "2" {
		t.Errorf("qemu started %q times, want 2 (BootAttempts)", strings.TrimSpace(string(b)))
	}
}

// watchBoot accepts /init's line whenever it comes within the timeout, and
// reports a stall when it never comes.
func TestWatchBootSeesBootedLine(t *testing.T) {
	console := filepath.Join(t.TempDir(), "console.log")
	go func() {
		time.Sleep(300 * time.Millisecond)
		_ = os.WriteFile(console, []byte("[ 3.9] x\r\n"+BootedLine+"/r.sh\r\n"), 0o644)
	}()
	if s := watchBoot(context.Background(), console, 5*time.Second); s != nil {
		t.Fatalf("watchBoot = %v, want nil", s)
	}
	if s := watchBoot(context.Background(), filepath.Join(t.TempDir(), "none"), 300*time.Millisecond); s == nil {
		t.Fatal("watchBoot of a console that never shows the line = nil, want a stall")
	}
}
