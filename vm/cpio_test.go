package vm

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-dp/sluice/internal/testenv"
)

func TestCPIORoundTrip(t *testing.T) {
	in := []CPIOEntry{
		{Name: "bin", Mode: ModeDir | 0o755},
		{Name: "dev/console", Mode: ModeCharDev | 0o600, RdevMajor: 5, RdevMinor: 1},
		{Name: "bin/busybox", Mode: ModeRegular | 0o755, Data: []byte("\x7fELF and then some")},
		{Name: "bin/sh", Mode: ModeSymlink | 0o777, Data: []byte("busybox")},
		{Name: "empty", Mode: ModeRegular | 0o644},
		{Name: "odd-length-name", Mode: ModeRegular | 0o644, Data: []byte("abc")},
	}
	var buf bytes.Buffer
	if err := WriteCPIO(&buf, in); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", buf.Len())
	}
	out, err := ReadCPIO(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) {
		t.Fatalf("read %d entries, wrote %d", len(out), len(in))
	}
	for i := range in {
		a, b := in[i], out[i]
		if a.Name != b.Name || a.Mode != b.Mode || !bytes.Equal(a.Data, b.Data) || a.RdevMajor != b.RdevMajor || a.RdevMinor != b.RdevMinor {
			t.Errorf("entry %d: wrote %+v, read %+v", i, a, b)
		}
	}
}

func TestCPIORejectsModeWithoutType(t *testing.T) {
	if err := WriteCPIO(&bytes.Buffer{}, []CPIOEntry{{Name: "x", Mode: 0o644}}); err == nil {
		t.Fatal("no error for a mode without file type")
	}
}

// TestCPIOWithSystemCpio checks the archive against an independent reader,
// GNU cpio, when it is installed.
func TestCPIOWithSystemCpio(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	testenv.SkipUnless(t, err == nil, "GNU cpio not installed")
	var buf bytes.Buffer
	if err := WriteCPIO(&buf, []CPIOEntry{
		{Name: "d", Mode: ModeDir | 0o755},
		{Name: "d/f", Mode: ModeRegular | 0o640, Data: []byte("hello\n")},
		{Name: "d/l", Mode: ModeSymlink | 0o777, Data: []byte("f")},
	}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(cpio, "-i", "--quiet", "--no-absolute-filenames", "-d")
	cmd.Dir, cmd.Stdin = dir, &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v: %s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "d/f")); err != nil || string(b) != "hello\n" {
		t.Errorf("d/f = %q, %v", b, err)
	}
	if l, err := os.Readlink(filepath.Join(dir, "d/l")); err != nil || l != "f" {
		t.Errorf("d/l -> %q, %v", l, err)
	}
}

func TestResultFilter(t *testing.T) {
	for _, c := range []struct {
		name, stream, out string
		status            int
		done              bool
	}{
		{"newline-terminated output", "PASS\nok\n\n" + ResultMarker + "0\n", "PASS\nok\n", 0, true},
		{"no trailing newline", "abc\n" + ResultMarker + "3\n", "abc", 3, true},
		{"no output", "\n" + ResultMarker + "1\n", "", 1, true},
		{"marker-like text in output", "x SLUICE-VM\n\n" + ResultMarker + "2\n", "x SLUICE-VM\n", 2, true},
		{"guest died", "partial", "partial", 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Feed one byte at a time: the marker must be found across writes.
			var out bytes.Buffer
			f := &resultFilter{out: &out}
			for i := range len(c.stream) {
				f.Write([]byte{c.stream[i]})
			}
			f.flush()
			if out.String() != c.out || f.done != c.done || f.status != c.status {
				t.Errorf("out %q done %v status %d; want %q %v %d", out.String(), f.done, f.status, c.out, c.done, c.status)
			}
		})
	}
}

func TestScripts(t *testing.T) {
	s := RunScript("/work/it's here", []string{"A=1", "B=x y"}, []string{"/var/tmp/p/lb.test", "-test.run", "^TestX$"})
	for _, want := range []string{
		`cd '/work/it'\''s here' || exit 125`,
		"exec env -i",
		"\tA=1 \\\n",
		"\t'B=x y' \\\n",
		"\t/var/tmp/p/lb.test \\\n",
		"\t'^TestX$'\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("run script lacks %q:\n%s", want, s)
		}
	}
	// The script must parse in a real shell.
	if sh, err := exec.LookPath("sh"); err == nil {
		if out, err := exec.Command(sh, "-n", "-c", s).CombinedOutput(); err != nil {
			t.Errorf("sh -n: %v: %s", err, out)
		}
		in := InitScript("6.1.0-1-cloud-amd64", []string{"kernel/net/ipv4/fou.ko.xz"})
		if out, err := exec.Command(sh, "-n", "-c", in).CombinedOutput(); err != nil {
			t.Errorf("sh -n on init: %v: %s", err, out)
		}
		if !strings.Contains(in, "insmod /lib/modules/6.1.0-1-cloud-amd64/kernel/net/ipv4/fou.ko ") {
			t.Errorf("init does not insmod the decompressed fou.ko:\n%s", in)
		}
		if !strings.Contains(in, `chroot $R /bin/sh "$script" >/dev/ttyS1`) {
			t.Errorf("init does not run the script on ttyS1:\n%s", in)
		}
	}
	// Round trip through a real shell: the command sees exactly its
	// arguments and environment.
	if sh, err := exec.LookPath("sh"); err == nil {
		s := RunScript("/", []string{"X=a'b c", "PATH=/usr/bin:/bin"}, []string{"/bin/sh", "-c", `printf '%s|' "$X" "$0" "$1"`, "arg 0", "$HOME"})
		out, err := exec.Command(sh, "-c", s).CombinedOutput()
		if err != nil || string(out) != "a'b c|arg 0|$HOME|" {
			t.Errorf("script output %q, %v", out, err)
		}
	}
}

func TestGuestPath(t *testing.T) {
	for in, want := range map[string]string{
		"/tmp":                    HostTmp,
		"/tmp/ci-clone/sim/x":     HostTmp + "/ci-clone/sim/x",
		"/tmpfoo/x":               "/tmpfoo/x",
		"/work/main/dataplane/lb": "/work/main/dataplane/lb",
		"/var/tmp/sluice-vm":      "/var/tmp/sluice-vm",
	} {
		if got := GuestPath(in); got != want {
			t.Errorf("GuestPath(%q) = %q, want %q", in, got, want)
		}
	}
	if s := RunScript("/tmp/ci clone/pkg", nil, []string{"/bin/true"}); !strings.Contains(s, "cd '"+HostTmp+"/ci clone/pkg' || exit 125") {
		t.Errorf("run script does not change to the guest's path of a directory under /tmp:\n%s", s)
	}
	// The bind mount must come before the tmpfs that hides the host's /tmp.
	in := InitScript("6.1.0-1-cloud-amd64", nil)
	bind, tmpfs := strings.Index(in, "mount -o bind $R/tmp $R"+HostTmp), strings.Index(in, "mount -t tmpfs tmpfs $R/tmp")
	if bind < 0 || tmpfs < 0 || bind > tmpfs {
		t.Errorf("init does not bind the host's /tmp to %s before mounting its own /tmp:\n%s", HostTmp, in)
	}
}

func TestGuestEnv(t *testing.T) {
	env := GuestEnv([]string{"SLUICE_FOO=1", "SLUICE_VM_KERNEL=6.1", "SLUICE_REQUIRE_PRIV=0", "TMPDIR=/host/tmp", "HOME=/home/u"},
		[]string{"EXTRA=2", "HOME=/x"})
	want := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/go/bin",
		"HOME=/x", "TMPDIR=/tmp", "GOCACHE=/tmp/go-cache", "LANG=C.UTF-8", "TERM=dumb",
		"SLUICE_FOO=1", "SLUICE_REQUIRE_PRIV=1", "SLUICE_GUEST=1", "EXTRA=2",
	}
	if strings.Join(env, "\n") != strings.Join(want, "\n") {
		t.Errorf("GuestEnv =\n%s\nwant\n%s", strings.Join(env, "\n"), strings.Join(want, "\n"))
	}
}

func TestTestTimeout(t *testing.T) {
	const m, d = 2 * 60e9, 20 * 60e9
	for _, c := range []struct {
		args []string
		want float64
	}{
		{[]string{"-test.v", "-test.timeout=10m0s"}, 12 * 60e9},
		{[]string{"-test.timeout", "30s"}, 30e9 + m},
		{[]string{"-test.timeout=0s"}, d},
		{nil, d},
	} {
		if got := TestTimeout(c.args, m, d); float64(got) != c.want {
			t.Errorf("TestTimeout(%v) = %v", c.args, got)
		}
	}
}
