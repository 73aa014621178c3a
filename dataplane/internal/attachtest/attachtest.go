// Package attachtest gives tests that attach programs to interfaces a
// network namespace of their own, a veth pair in it, and a way to send raw
// frames through it.
package attachtest

import (
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/dataplane/internal/bpfenc"
)

// InNetns runs fn on a thread inside a new network namespace, which
// disappears with everything in it when fn returns, also on failure.
func InNetns(t *testing.T, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get netns: %v", err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("new netns: %v", err)
	}
	defer func() {
		ns.Close()
		// A thread that cannot go back stays locked, so that the Go
		// runtime retires it rather than reuse it in the wrong namespace.
		if err := netns.Set(orig); err != nil {
			t.Errorf("return to the original netns: %v", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	fn()
}

// Veth creates the veth pair a <-> b in the current namespace, sets both
// ends up and returns them.
func Veth(t *testing.T, a, b string) (netlink.Link, netlink.Link) {
	t.Helper()
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}, PeerName: b}); err != nil {
		t.Fatalf("add veth %s-%s: %v", a, b, err)
	}
	var links []netlink.Link
	for _, name := range []string{a, b} {
		l, err := netlink.LinkByName(name)
		if err != nil {
			t.Fatalf("find %s: %v", name, err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatalf("set %s up: %v", name, err)
		}
		links = append(links, l)
	}
	return links[0], links[1]
}

// Send sends frame, a whole Ethernet frame, out of the interface with the
// given index.
func Send(t *testing.T, ifindex int, frame []byte) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	defer unix.Close(fd)
	proto := uint16(frame[12])<<8 | uint16(frame[13])
	sa := &unix.SockaddrLinklayer{Protocol: bpfenc.Htons(proto), Ifindex: ifindex, Halen: 6}
	copy(sa.Addr[:], frame[:6])
	if err := unix.Sendto(fd, frame, 0, sa); err != nil {
		t.Fatalf("send frame: %v", err)
	}
}

// ProgID returns the kernel's id of p, to compare with what the kernel
// lists as attached.
func ProgID(t *testing.T, p *ebpf.Program) ebpf.ProgramID {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatalf("program info: %v", err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("program id unavailable")
	}
	return id
}
