package bench

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netns"

	"github.com/sluice-dp/sluice/internal/testenv"
)

// newLab returns a lab that is closed when the test ends, failed or not.
func newLab(t *testing.T, mode Mode) *Lab {
	t.Helper()
	testenv.RequirePriv(t)
	lab, err := NewLab(mode)
	if err != nil {
		t.Fatalf("new %s lab: %v", mode, err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("close lab %s: %v", lab.Name(), err)
		}
	})
	return lab
}

// assertNetnsGone checks every way a deleted lab could linger: the name, the
// mount point, ip-netns(8)'s view, and, through canary (an XDP link on the
// lab's device, or nil), the namespace itself. The kernel detaches a link
// from its device only when the device is unregistered, which for a veth
// inside a namespace happens only once nothing holds the namespace: no fd,
// no socket, no thread. Namespaces are torn down asynchronously, hence the
// wait.
func assertNetnsGone(t *testing.T, name string, canary link.Link) {
	t.Helper()
	if h, err := netns.GetFromName(name); err == nil {
		h.Close()
		t.Errorf("netns %s still opens after Close", name)
	}
	if _, err := os.Stat(netnsDir + "/" + name); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat %s/%s after Close: %v, want not exist", netnsDir, name, err)
	}
	if ip, err := exec.LookPath("ip"); err == nil {
		out, err := exec.Command(ip, "netns", "list").CombinedOutput()
		if err != nil {
			t.Errorf("ip netns list: %v: %s", err, out)
		}
		if strings.Contains(string(out), name) {
			t.Errorf("ip netns list still shows %s:\n%s", name, out)
		}
	}
	if canary == nil {
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := canary.Info()
		if err != nil {
			t.Fatalf("canary link info: %v", err)
		}
		if info.XDP() == nil {
			t.Fatal("canary link info has no XDP part")
		}
		if info.XDP().Ifindex == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("device %d of netns %s still registered 10s after Close: something holds the namespace", info.XDP().Ifindex, name)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// attachCanary links an empty program to the lab's device with a BPF link,
// whose info tells when the device is gone.
func attachCanary(t *testing.T, lab *Lab) link.Link {
	t.Helper()
	prog, err := EmptyProgram(Pass)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	var l link.Link
	err = lab.do(func() error {
		var err error
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: lab.Ifindex(), Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		t.Fatalf("attach canary to %s in %s: %v", devName, lab.Name(), err)
	}
	t.Cleanup(func() { l.Close() })
	info, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	if got := info.XDP().Ifindex; got != uint32(lab.Ifindex()) {
		t.Fatalf("canary on ifindex %d, want %d", got, lab.Ifindex())
	}
	return l
}

func TestLabCloseDeletesNetns(t *testing.T) {
	for _, mode := range []Mode{Native, Generic} {
		t.Run(mode.String(), func(t *testing.T) {
			lab := newLab(t, mode)
			name := lab.Name()
			if !strings.HasPrefix(name, NamePrefix) {
				t.Errorf("lab name %q lacks prefix %q", name, NamePrefix)
			}
			if pid, ok := labPID(name); !ok || pid != os.Getpid() {
				t.Errorf("lab name %q: pid %d, %t; want this process, %d", name, pid, ok, os.Getpid())
			}
			h, err := netns.GetFromName(name)
			if err != nil {
				t.Fatalf("netns %s does not open while the lab is open: %v", name, err)
			}
			h.Close()
			canary := attachCanary(t, lab)

			if err := lab.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			if err := lab.Close(); err != nil {
				t.Errorf("second close: %v", err)
			}
			if _, err := lab.Measure(emptyProgram(t, TX), udpFrame(t), testOpts); !errors.Is(err, ErrClosed) {
				t.Errorf("Measure after Close: %v, want ErrClosed", err)
			}
			if _, err := lab.Delivered(); !errors.Is(err, ErrClosed) {
				t.Errorf("Delivered after Close: %v, want ErrClosed", err)
			}
			assertNetnsGone(t, name, canary)
		})
	}
}

// TestLabModes checks the receiving side of each mode as the kernel reports
// it: where the sink is attached, and GRO where generic mode needs it.
func TestLabModes(t *testing.T) {
	for _, tc := range []struct {
		mode       Mode
		attachMode uint32 // XDP_ATTACHED_* from if_link.h
		gro        bool
	}{
		{Native, 1, false}, // XDP_ATTACHED_DRV
		{Generic, 2, true}, // XDP_ATTACHED_SKB
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			lab := newLab(t, tc.mode)
			peer, err := lab.nl.LinkByName(peerName)
			if err != nil {
				t.Fatal(err)
			}
			xdp := peer.Attrs().Xdp
			if xdp == nil || !xdp.Attached || xdp.AttachMode != tc.attachMode {
				t.Errorf("%s xdp: %+v, want attached in mode %d", peerName, xdp, tc.attachMode)
			}
			dev, err := lab.nl.LinkByName(devName)
			if err != nil {
				t.Fatal(err)
			}
			if x := dev.Attrs().Xdp; x != nil && x.Attached {
				t.Errorf("%s has xdp %+v; nothing needs a program there", devName, x)
			}
			var on bool
			if err := lab.do(func() error { on, err = gro(peerName); return err }); err != nil {
				t.Fatal(err)
			}
			if tc.gro && !on {
				t.Errorf("gro is off on %s in a %s lab", peerName, tc.mode)
			}
		})
	}
}

func TestLabPanicInNetnsStillCloses(t *testing.T) {
	lab := newLab(t, Native)
	name := lab.Name()
	canary := attachCanary(t, lab)
	func() {
		defer func() {
			if v := recover(); v != "deliberate" {
				t.Errorf("recovered %v, want the panic from inside the netns", v)
			}
		}()
		defer lab.Close()
		_ = lab.do(func() error { panic("deliberate") })
	}()
	assertNetnsGone(t, name, canary)
}

// helperEnv makes TestHelperLabThenFail do its job when the test binary runs
// itself; unset, that test does nothing.
const helperEnv = "BENCH_HELPER_LAB"

// TestHelperLabThenFail is not a test of its own: TestLabDeletedWhenTestFails
// runs it in a child process, where it creates a lab, prints its name and
// then fails or panics.
func TestHelperLabThenFail(t *testing.T) {
	how := os.Getenv(helperEnv)
	if how == "" {
		return
	}
	lab := newLab(t, Native)
	os.Stdout.WriteString("LAB " + lab.Name() + "\n")
	switch how {
	case "fatal":
		t.Fatal("deliberate failure with a lab open")
	case "panic":
		panic("deliberate panic with a lab open")
	}
}

func TestLabDeletedWhenTestFails(t *testing.T) {
	testenv.RequirePriv(t)
	for _, how := range []string{"fatal", "panic"} {
		t.Run(how, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperLabThenFail$", "-test.count=1")
			cmd.Env = append(os.Environ(), helperEnv+"="+how)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("child: %v, want it to fail:\n%s", err, out)
			}
			var name string
			sc := bufio.NewScanner(strings.NewReader(string(out)))
			for sc.Scan() {
				if n, ok := strings.CutPrefix(sc.Text(), "LAB "); ok {
					name = n
				}
			}
			if name == "" {
				t.Fatalf("child printed no lab name:\n%s", out)
			}
			assertNetnsGone(t, name, nil)
		})
	}
}

func TestCleanupStale(t *testing.T) {
	testenv.RequirePriv(t)
	// A pid that just exited is free, and reuse within the test is
	// vanishingly unlikely.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	name := NamePrefix + strconv.Itoa(dead.Process.Pid) + "-0badcafe"
	ns := netns.None()
	if err := createNamedNetns(name, &ns); err != nil {
		t.Fatal(err)
	}
	ns.Close()
	t.Cleanup(func() { _ = netns.DeleteNamed(name) })
	live := newLab(t, Native)

	deleted, err := CleanupStale()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(deleted, name) {
		t.Errorf("CleanupStale deleted %q, want it to include %s", deleted, name)
	}
	if slices.Contains(deleted, live.Name()) {
		t.Errorf("CleanupStale deleted this process's lab %s", live.Name())
	}
	assertNetnsGone(t, name, nil)
	h, err := netns.GetFromName(live.Name())
	if err != nil {
		t.Fatalf("live lab's netns gone after CleanupStale: %v", err)
	}
	h.Close()
}

func TestLabPID(t *testing.T) {
	for _, tc := range []struct {
		name string
		pid  int
		ok   bool
	}{
		{"slb-1234-0badcafe", 1234, true},
		{"slb-1234-0badcaf", 0, false},
		{"slb-1234-0badcafz", 0, false},
		{"slb-x-0badcafe", 0, false},
		{"slb-0-0badcafe", 0, false},
		{"other-1234-0badcafe", 0, false},
		{"slb-1234", 0, false},
	} {
		pid, ok := labPID(tc.name)
		if pid != tc.pid || ok != tc.ok {
			t.Errorf("labPID(%q) = %d, %t; want %d, %t", tc.name, pid, ok, tc.pid, tc.ok)
		}
	}
}
