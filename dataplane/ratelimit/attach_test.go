package ratelimit

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/dataplane/attach"
	"github.com/sluice-dp/sluice/dataplane/internal/attachtest"
	"github.com/sluice-dp/sluice/dataplane/internal/bpfenc"
	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/dataplane/police"
)

// TestAttach attaches the limiter to one end of a veth pair in a namespace
// of its own, in native and generic mode, sends a SYN its exhausted RST rule
// refuses from the other end, and checks that the RST comes back out of the
// same interface, and that Close detaches the program.
func TestAttach(t *testing.T) {
	for _, mode := range []attach.Mode{attach.Native, attach.Generic} {
		t.Run(mode.String(), func(t *testing.T) {
			web := Match{Port: 80, Proto: l4.TCP}
			l := newLimiter(t, Rule{Match: web, Rate: 1, Window: time.Minute, Action: police.RST})
			exhausted(t, l, web)
			dst := netip.AddrPortFrom(vip4, 80)
			attachtest.InNetns(t, func() {
				_, rl1 := attachtest.Veth(t, "rl0", "rl1")
				// Native XDP_TX into a veth is delivered only if the
				// peer runs an XDP program too.
				peer, err := attachPass(rl1)
				if err != nil {
					t.Fatalf("attach xdp pass to rl1: %v", err)
				}
				defer peer.Close()
				at, err := l.Attach("rl0", mode)
				if err != nil {
					t.Fatalf("attach: %v", err)
				}
				if !attached(t, l, "rl0") {
					t.Errorf("the kernel does not list the program on rl0")
				}
				fd := capture(t, rl1.Attrs().Index)
				want := rst(t, dst, client4, 0, 2)
				got := false
				for deadline := time.Now().Add(2 * time.Second); !got && time.Now().Before(deadline); {
					attachtest.Send(t, rl1.Attrs().Index, syn(client4, dst))
					got = receive(fd, want, 200*time.Millisecond)
				}
				if !got {
					t.Errorf("no RST came back on rl1")
				}
				if c := counters(t, l).Stats; c["rst_sent"] == 0 {
					t.Errorf("rst_sent did not move: %v", c)
				}
				if err := at.Close(); err != nil {
					t.Fatalf("detach: %v", err)
				}
				if attached(t, l, "rl0") {
					t.Errorf("the program is still attached after Close")
				}
			})
		})
	}
}

// attachPass attaches a program that passes everything to lk, natively.
func attachPass(lk netlink.Link) (*attach.XDPAttachment, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}, // XDP_PASS
		License:      "GPL",
	})
	if err != nil {
		return nil, err
	}
	defer prog.Close()
	return attach.XDP(prog, lk.Attrs().Name, attach.Native)
}

func attached(t *testing.T, l *Limiter, iface string) bool {
	t.Helper()
	lk, err := netlink.LinkByName(iface)
	if err != nil {
		t.Fatalf("find %s: %v", iface, err)
	}
	x := lk.Attrs().Xdp
	return x != nil && x.Attached && ebpf.ProgramID(x.ProgId) == attachtest.ProgID(t, l.Program())
}

// capture opens a packet socket on the interface with the given index.
func capture(t *testing.T, ifindex int) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(bpfenc.Htons(unix.ETH_P_ALL)))
	if err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: bpfenc.Htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		t.Fatalf("bind packet socket: %v", err)
	}
	return fd
}

// receive reads frames from fd until one equals want or wait passes.
func receive(fd int, want []byte, wait time.Duration) bool {
	tv := unix.NsecToTimeval(wait.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return false
	}
	buf := make([]byte, 2048)
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == nil && bytes.Equal(buf[:n], want) {
			return true
		}
	}
	return false
}
