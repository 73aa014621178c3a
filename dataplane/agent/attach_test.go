package agent

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/dataplane/attach"
	"github.com/sluice-dp/sluice/dataplane/internal/attachtest"
	"github.com/sluice-dp/sluice/dataplane/internal/bpfenc"
	"github.com/sluice-dp/sluice/internal/pkttest"
	"github.com/sluice-dp/sluice/internal/testenv"
)

// kernelHasTCX says whether the running kernel is 6.6 or later, where tcx
// appeared; judged from the release string, independently of how the
// package probes for it.
func kernelHasTCX(t *testing.T) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatalf("uname: %v", err)
	}
	rel := unix.ByteSliceToString(u.Release[:])
	parts := strings.SplitN(rel, ".", 3)
	major, _ := strconv.Atoi(parts[0])
	minor := 0
	if len(parts) > 1 {
		minor, _ = strconv.Atoi(strings.TrimFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	}
	return major > 6 || major == 6 && minor >= 6
}

func packetSocket(t *testing.T, ifindex int) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(bpfenc.Htons(unix.ETH_P_ALL)))
	if err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: bpfenc.Htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		t.Fatalf("bind packet socket: %v", err)
	}
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatalf("set receive timeout: %v", err)
	}
	return fd
}

// receive reads frames from fd until one equals want or two seconds pass.
func receive(t *testing.T, fd int, want []byte) bool {
	t.Helper()
	buf := make([]byte, 2048)
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			continue
		}
		if bytes.Equal(buf[:n], want) {
			return true
		}
	}
	return false
}

func send(t *testing.T, fd, ifindex int, frame []byte) {
	t.Helper()
	sa := &unix.SockaddrLinklayer{Protocol: bpfenc.Htons(unix.ETH_P_ALL), Ifindex: ifindex, Halen: 6}
	copy(sa.Addr[:], frame[:6])
	if err := unix.Sendto(fd, frame, 0, sa); err != nil {
		t.Fatalf("send frame: %v", err)
	}
}

// TestAttach attaches the agent to the host end of a veth pair the way the
// kernel allows (tcx from 6.6, netlink before) and, separately, with the
// netlink path forced, and checks both ways: the programs are where the
// kernel says, a GUE packet sent out of the host end arrives decapsulated
// at the VM end, a VM's reply passes the ingress program, and detaching
// leaves nothing behind.
func TestAttach(t *testing.T) {
	testenv.RequirePriv(t)
	a := newAgent(t, Config{})
	for _, force := range []bool{false, true} {
		name := "auto"
		if force {
			name = "netlink forced"
		}
		t.Run(name, func(t *testing.T) {
			attachtest.InNetns(t, func() { checkAttach(t, a, force) })
		})
	}
}

func checkAttach(t *testing.T, a *Agent, force bool) {
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "sl-host", HardwareAddr: hostMAC}, PeerName: "sl-vm", PeerHardwareAddr: vmMAC}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	host, err := netlink.LinkByName("sl-host")
	if err != nil {
		t.Fatal(err)
	}
	vm, err := netlink.LinkByName("sl-vm")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []netlink.Link{host, vm} {
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatalf("set %s up: %v", l.Attrs().Name, err)
		}
	}

	at, err := a.Attach("sl-host", AttachOptions{ForceNetlink: force})
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	want := attach.Netlink
	if !force && kernelHasTCX(t) {
		want = attach.TCX
	}
	if at.Method != want {
		t.Errorf("attached with %v, want %v", at.Method, want)
	}
	egressID, ingressID := attachtest.ProgID(t, a.Egress()), attachtest.ProgID(t, a.Ingress())
	if got := attachedIDs(t, host, at.Method); !got[egressID] || !got[ingressID] {
		t.Errorf("attached programs %v, want egress %d and ingress %d", got, egressID, ingressID)
	}
	hostFD := packetSocket(t, host.Attrs().Index)
	vmFD := packetSocket(t, vm.Attrs().Index)
	before := readCounters(t, a)
	// Same family, and both mixed ones, whose Ethernet type must change.
	inner4 := tcp(toVM(client4, withPort(vip4, 80)), pkttest.SYN, "")
	inner6 := tcp(toVM(client6, withPort(vip6, 80)), pkttest.SYN, "")
	for _, c := range []struct {
		name      string
		in, inner []byte
	}{
		{"gue 4in4", pkttest.GUE(outer(backend4), pkttest.IPPacket(inner4)), inner4},
		{"gue 4in6", pkttest.GUE(outer(backend6), pkttest.IPPacket(inner4)), inner4},
		{"ipip 6in4", pkttest.IPIP(outer(backend4), pkttest.IPPacket(inner6)), inner6},
		{"transparent", pkttest.GUE(outer(backend4), pkttest.IPPacket(tcp(toVM(client4, withPort(vipT4, 80)), pkttest.SYN, ""))),
			tcp(toVM(client4, app4), pkttest.SYN, "")},
	} {
		send(t, hostFD, host.Attrs().Index, c.in)
		if !receive(t, vmFD, c.inner) {
			t.Errorf("%s: the decapsulated frame did not arrive at the VM end", c.name)
		}
	}
	// A local-mode reply passes; a transparent one is rewritten.
	send(t, vmFD, vm.Attrs().Index, tcp(fromVM(withPort(vip4, 80), client4), pkttest.SYN|pkttest.ACK, ""))
	send(t, vmFD, vm.Attrs().Index, tcp(fromVM(app4, client4), pkttest.SYN|pkttest.ACK, ""))
	time.Sleep(50 * time.Millisecond)
	after := readCounters(t, a)
	if d := after.Stats["deliver_local"] - before.Stats["deliver_local"]; d != 3 {
		t.Errorf("deliver_local moved by %d, want 3", d)
	}
	if d := after.Stats["deliver_transparent"] - before.Stats["deliver_transparent"]; d != 1 {
		t.Errorf("deliver_transparent moved by %d, want 1", d)
	}
	if d := after.Stats["reply_rewritten"] - before.Stats["reply_rewritten"]; d != 1 {
		t.Errorf("reply_rewritten moved by %d, want 1", d)
	}
	if d := after.Stats["reply_pass"] - before.Stats["reply_pass"]; d < 1 {
		t.Errorf("reply_pass moved by %d, want at least 1 (the VM's reply)", d)
	}

	if err := at.Close(); err != nil {
		t.Fatalf("detach: %v", err)
	}
	if got := attachedIDs(t, host, at.Method); len(got) != 0 {
		t.Errorf("programs still attached after detach: %v", got)
	}
	if force {
		qs, err := netlink.QdiscList(host)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range qs {
			if q.Type() == "clsact" {
				t.Errorf("clsact qdisc left behind after detach")
			}
		}
	}
}

func attachedIDs(t *testing.T, l netlink.Link, m attach.Method) map[ebpf.ProgramID]bool {
	t.Helper()
	ids := make(map[ebpf.ProgramID]bool)
	for _, id := range attachedList(t, l, m) {
		ids[id] = true
	}
	return ids
}

func attachedList(t *testing.T, l netlink.Link, m attach.Method) []ebpf.ProgramID {
	t.Helper()
	var ids []ebpf.ProgramID
	if m == attach.TCX {
		for _, typ := range []ebpf.AttachType{ebpf.AttachTCXEgress, ebpf.AttachTCXIngress} {
			r, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: typ})
			if err != nil {
				t.Fatalf("query tcx programs: %v", err)
			}
			for _, p := range r.Programs {
				ids = append(ids, p.ID)
			}
		}
		return ids
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_EGRESS, netlink.HANDLE_MIN_INGRESS} {
		fs, err := netlink.FilterList(l, parent)
		if err != nil {
			if strings.Contains(err.Error(), "invalid argument") {
				continue // no clsact qdisc
			}
			t.Fatalf("list filters: %v", err)
		}
		for _, f := range fs {
			if bf, ok := f.(*netlink.BpfFilter); ok {
				ids = append(ids, ebpf.ProgramID(bf.Id))
			}
		}
	}
	return ids
}
