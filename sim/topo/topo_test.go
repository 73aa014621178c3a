package topo

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/internal/testenv"
)

var (
	macA = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x0a}
	macB = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x0b}
)

// newTopo returns an empty topology closed when the test ends.
func newTopo(t *testing.T) *Topology {
	t.Helper()
	testenv.RequirePriv(t)
	topo, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return topo
}

func addNodes(t *testing.T, topo *Topology, names ...string) []*Node {
	t.Helper()
	var nodes []*Node
	for _, name := range names {
		n, err := topo.AddNode(name)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	return nodes
}

// pair builds nodes a and b joined by one link, a 10.200.0.1/24 and b
// 10.200.0.2/24, with interface names that start with the run prefix so a
// test can look for them in the root namespace.
func pair(t *testing.T, topo *Topology) (*Node, *Node, *Link) {
	t.Helper()
	n := addNodes(t, topo, "a", "b")
	l, err := topo.AddLink(
		LinkEnd{Node: n[0], Iface: topo.Prefix() + "a", MAC: macA, Addrs: []netip.Prefix{netip.MustParsePrefix("10.200.0.1/24")}},
		LinkEnd{Node: n[1], Iface: topo.Prefix() + "b", MAC: macB, Addrs: []netip.Prefix{netip.MustParsePrefix("10.200.0.2/24")}},
	)
	if err != nil {
		t.Fatal(err)
	}
	return n[0], n[1], l
}

// listen opens a UDP socket in n, closed when the test ends.
func listen(t *testing.T, n *Node, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := n.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, n.Name(), err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// send sends one datagram from a fresh socket in n and returns the socket's
// local address.
func send(t *testing.T, n *Node, to string, payload []byte) netip.AddrPort {
	t.Helper()
	var local netip.AddrPort
	err := n.Do(func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(to)))
		if err != nil {
			return err
		}
		defer c.Close()
		local = c.LocalAddr().(*net.UDPAddr).AddrPort()
		_, err = c.Write(payload)
		return err
	})
	if err != nil {
		t.Fatalf("send to %s from %s: %v", to, n.Name(), err)
	}
	return local
}

// receive reads one datagram or fails the test after a second.
func receive(t *testing.T, c *net.UDPConn) ([]byte, netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(time.Second))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	return buf[:n], from
}

func TestUDPBetweenTwoNodes(t *testing.T) {
	topo := newTopo(t)
	a, b, _ := pair(t, topo)
	srv := listen(t, b, "10.200.0.2:9000")

	from := send(t, a, "10.200.0.2:9000", []byte("hello b"))
	got, src := receive(t, srv)
	if string(got) != "hello b" {
		t.Errorf("b received %q, want %q", got, "hello b")
	}
	if src != netip.AddrPortFrom(netip.MustParseAddr("10.200.0.1"), from.Port()) {
		t.Errorf("datagram from %v, want a's socket 10.200.0.1:%d", src, from.Port())
	}
}

func TestLinkEndsConfigured(t *testing.T) {
	topo := newTopo(t)
	_, _, l := pair(t, topo)
	for _, e := range []Endpoint{l.A, l.B} {
		lk, err := e.Node.Netlink().LinkByName(e.Iface)
		if err != nil {
			t.Fatalf("%s has no %s: %v", e.Node.Name(), e.Iface, err)
		}
		if lk.Type() != "veth" {
			t.Errorf("%s/%s is a %s, want veth", e.Node.Name(), e.Iface, lk.Type())
		}
		if lk.Attrs().Index != e.Index {
			t.Errorf("%s/%s index %d, Endpoint says %d", e.Node.Name(), e.Iface, lk.Attrs().Index, e.Index)
		}
		if !bytes.Equal(lk.Attrs().HardwareAddr, e.MAC) {
			t.Errorf("%s/%s mac %v, want %v", e.Node.Name(), e.Iface, lk.Attrs().HardwareAddr, e.MAC)
		}
		if lk.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("%s/%s is down", e.Node.Name(), e.Iface)
		}
		addrs, err := e.Node.Netlink().AddrList(lk, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		if len(addrs) != 1 || addrs[0].IPNet.String() != e.Addrs[0].String() {
			t.Errorf("%s/%s addresses %v, want %v", e.Node.Name(), e.Iface, addrs, e.Addrs)
		}
		// Veths are created inside the namespaces and must never appear
		// in the caller's.
		if _, err := netlink.LinkByName(e.Iface); err == nil {
			t.Errorf("%s exists in the root namespace", e.Iface)
		}
		// No IPv6 address asked for, so none, not even link-local.
		v6, err := e.Node.Sysctl("net/ipv6/conf/" + e.Iface + "/disable_ipv6")
		if err != nil {
			t.Fatal(err)
		}
		if v6 != "1" {
			t.Errorf("%s/%s disable_ipv6 = %s, want 1 on an IPv4-only link", e.Node.Name(), e.Iface, v6)
		}
	}
}

func TestIPv6Link(t *testing.T) {
	topo := newTopo(t)
	n := addNodes(t, topo, "a", "b")
	_, err := topo.AddLink(
		LinkEnd{Node: n[0], Addrs: []netip.Prefix{netip.MustParsePrefix("10.200.0.1/24"), netip.MustParsePrefix("fd00:200::1/64")}},
		LinkEnd{Node: n[1], Addrs: []netip.Prefix{netip.MustParsePrefix("10.200.0.2/24"), netip.MustParsePrefix("fd00:200::2/64")}},
	)
	if err != nil {
		t.Fatal(err)
	}
	// Binding right away also shows that the address skipped DAD: a
	// tentative address cannot be bound.
	srv := listen(t, n[1], "[fd00:200::2]:9000")
	from := send(t, n[0], "[fd00:200::2]:9000", []byte("v6"))
	got, src := receive(t, srv)
	if string(got) != "v6" || src.Addr() != netip.MustParseAddr("fd00:200::1") || src.Port() != from.Port() {
		t.Errorf("received %q from %v, want %q from [fd00:200::1]:%d", got, src, "v6", from.Port())
	}
}

func TestDefaultInterfaceNameIsPeerName(t *testing.T) {
	topo := newTopo(t)
	n := addNodes(t, topo, "client", "router")
	l, err := topo.AddLink(LinkEnd{Node: n[0]}, LinkEnd{Node: n[1]})
	if err != nil {
		t.Fatal(err)
	}
	if l.A.Iface != "router" || l.B.Iface != "client" {
		t.Errorf("interfaces %s and %s, want router (in client) and client (in router)", l.A.Iface, l.B.Iface)
	}
	for _, e := range []Endpoint{l.A, l.B} {
		if _, err := e.Node.Netlink().LinkByName(e.Iface); err != nil {
			t.Errorf("%s has no %s: %v", e.Node.Name(), e.Iface, err)
		}
		if e.MAC[0]&0x03 != 0x02 {
			t.Errorf("generated mac %v is not unicast and locally administered", e.MAC)
		}
	}
}

func TestAddLinkRejects(t *testing.T) {
	topo := newTopo(t)
	n := addNodes(t, topo, "a", "b")
	other := newTopo(t)
	foreign := addNodes(t, other, "x")[0]
	for _, c := range []struct {
		name string
		a, b LinkEnd
	}{
		{"interface name of 16 bytes", LinkEnd{Node: n[0], Iface: "abcdefghijklmnop"}, LinkEnd{Node: n[1]}},
		{"multicast mac", LinkEnd{Node: n[0], MAC: net.HardwareAddr{1, 0, 0, 0, 0, 1}}, LinkEnd{Node: n[1]}},
		{"missing node", LinkEnd{}, LinkEnd{Node: n[1]}},
		{"node of another topology", LinkEnd{Node: n[0]}, LinkEnd{Node: foreign}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := topo.AddLink(c.a, c.b); !errors.Is(err, ErrInvalid) {
				t.Errorf("AddLink: %v, want ErrInvalid", err)
			}
		})
	}
}

func TestRoutedThroughForwardingNode(t *testing.T) {
	topo := newTopo(t)
	n := addNodes(t, topo, "a", "r", "b")
	a, r, b := n[0], n[1], n[2]
	p := netip.MustParsePrefix
	if _, err := topo.AddLink(LinkEnd{Node: a, Addrs: []netip.Prefix{p("10.201.1.2/24")}}, LinkEnd{Node: r, Addrs: []netip.Prefix{p("10.201.1.1/24")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := topo.AddLink(LinkEnd{Node: r, Addrs: []netip.Prefix{p("10.201.2.1/24")}}, LinkEnd{Node: b, Addrs: []netip.Prefix{p("10.201.2.2/24")}}); err != nil {
		t.Fatal(err)
	}
	srv := listen(t, b, "10.201.2.2:9000")

	// Without forwarding the router drops what is not for itself.
	if err := a.AddRoute(Route{Dst: p("0.0.0.0/0"), Via: netip.MustParseAddr("10.201.1.1")}); err != nil {
		t.Fatal(err)
	}
	if err := b.AddRoute(Route{Dst: p("10.201.1.0/24"), Via: netip.MustParseAddr("10.201.2.1"), Dev: "r"}); err != nil {
		t.Fatal(err)
	}
	send(t, a, "10.201.2.2:9000", []byte("before"))
	srv.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, _, err := srv.ReadFromUDPAddrPort(make([]byte, 64)); err == nil {
		t.Fatal("datagram crossed a router with forwarding off")
	}

	if err := r.EnableForwarding(); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"net.ipv4.ip_forward":             "1",
		"net.ipv6.conf.all.forwarding":    "1",
		"net.ipv4.conf.all.rp_filter":     "0",
		"net.ipv4.conf.default.rp_filter": "0",
		"net.ipv4.conf.a.rp_filter":       "0",
		"net.ipv4.conf.b.rp_filter":       "0",
	} {
		if got, err := r.Sysctl(name); err != nil || got != want {
			t.Errorf("router %s = %q (%v), want %s", name, got, err, want)
		}
	}
	from := send(t, a, "10.201.2.2:9000", []byte("after"))
	got, src := receive(t, srv)
	if string(got) != "after" || src != netip.AddrPortFrom(netip.MustParseAddr("10.201.1.2"), from.Port()) {
		t.Errorf("b received %q from %v, want %q from 10.201.1.2:%d", got, src, "after", from.Port())
	}
}

func TestSysctlIsPerNamespace(t *testing.T) {
	topo := newTopo(t)
	n := addNodes(t, topo, "a")[0]
	const name = "net.ipv4.tcp_syn_retries"
	const path = "/proc/sys/net/ipv4/tcp_syn_retries"
	// Runs on a thread of the test, which is in the root namespace.
	rootBefore, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A value the root namespace does not have, so that reading the root's
	// value through the node would be noticed.
	want := "2"
	if strings.TrimSpace(string(rootBefore)) == want {
		want = "3"
	}
	if err := n.SetSysctl(name, want); err != nil {
		t.Fatal(err)
	}
	if got, err := n.Sysctl(name); err != nil || got != want {
		t.Errorf("node %s = %q (%v), want %s", name, got, err, want)
	}
	rootAfter, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rootBefore, rootAfter) {
		t.Errorf("root %s changed from %q to %q", name, rootBefore, rootAfter)
	}
}

func TestSysctlPath(t *testing.T) {
	for _, c := range []struct{ name, want string }{
		{"net.ipv4.ip_forward", "/proc/sys/net/ipv4/ip_forward"},
		{"net/ipv4/conf/eth0.5/rp_filter", "/proc/sys/net/ipv4/conf/eth0.5/rp_filter"},
		{"kernel.hostname", ""},
		{"net/../kernel/hostname", ""},
		{"net.ipv4..ip_forward", ""},
		{"/proc/sys/net/ipv4/ip_forward", ""},
	} {
		got, err := sysctlPath(c.name)
		if c.want == "" {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("sysctlPath(%q) = %q, %v; want ErrInvalid", c.name, got, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("sysctlPath(%q) = %q, %v; want %q", c.name, got, err, c.want)
		}
	}
}

func TestPinNeighbors(t *testing.T) {
	topo := newTopo(t)
	_, _, l := pair(t, topo)
	if err := l.PinNeighbors(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct{ local, remote Endpoint }{{l.A, l.B}, {l.B, l.A}} {
		neighs, err := p.local.Node.Netlink().NeighList(p.local.Index, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, nb := range neighs {
			if nb.IP.Equal(p.remote.Addr4().AsSlice()) {
				found = true
				if nb.State != netlink.NUD_PERMANENT || !bytes.Equal(nb.HardwareAddr, p.remote.MAC) {
					t.Errorf("%s: neighbor %v state %#x mac %v, want permanent %v", p.local.Node.Name(), nb.IP, nb.State, nb.HardwareAddr, p.remote.MAC)
				}
			}
		}
		if !found {
			t.Errorf("%s has no neighbor entry for %v", p.local.Node.Name(), p.remote.Addr4())
		}
	}
}

// capture opens a packet socket on dev in n that sees frames arriving
// there (not the ones n sends).
func capture(t *testing.T, n *Node, dev string) int {
	t.Helper()
	var fd int
	err := n.Do(func() error {
		ifc, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		tv := unix.Timeval{Usec: 200000}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifc.Index})
	})
	if err != nil {
		t.Fatalf("capture on %s in %s: %v", dev, n.Name(), err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// nextIncoming returns the next frame received (not sent) on a capture
// socket whose payload contains marker, or nil after the socket's timeout.
func nextIncoming(fd int, marker []byte) []byte {
	buf := make([]byte, 2048)
	for {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if bytes.Contains(buf[:n], marker) {
			return append([]byte(nil), buf[:n]...)
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// udpChecksumOK verifies the UDP checksum of an Ethernet/IPv4/UDP frame.
func udpChecksumOK(frame []byte) bool {
	ip := frame[14:]
	ihl := int(ip[0]&0x0f) * 4
	seg := ip[ihl:binary.BigEndian.Uint16(ip[2:])]
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(ip[12:20])
	sum += uint32(unix.IPPROTO_UDP) + uint32(len(seg))
	add(seg)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return sum == 0xffff
}

func TestTxChecksum(t *testing.T) {
	topo := newTopo(t)
	a, b, l := pair(t, topo)
	if err := l.PinNeighbors(); err != nil {
		t.Fatal(err)
	}
	fd := capture(t, b, l.B.Iface)
	for _, c := range []struct {
		name    string
		offload bool
		valid   bool
	}{
		// With offload the field holds only the pseudo-header sum: the
		// checksum is left for a NIC that a veth never has.
		{"offload on leaves the checksum partial", true, false},
		{"offload off sends a complete checksum", false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := a.SetTxChecksum(l.A.Iface, c.offload); err != nil {
				t.Fatal(err)
			}
			marker := []byte("csum-" + c.name)
			send(t, a, "10.200.0.2:9", marker)
			frame := nextIncoming(fd, marker)
			if frame == nil {
				t.Fatal("frame not captured on b")
			}
			if got := udpChecksumOK(frame); got != c.valid {
				t.Errorf("checksum valid = %t, want %t", got, c.valid)
			}
		})
	}
}

// bounceProgram returns every frame with XDP_TX, unchanged.
func bounceProgram(t *testing.T) *ebpf.Program {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 3), asm.Return()}, // XDP_TX
		License:      "GPL",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog
}

func TestAttachXDPPassReceivesXDPTx(t *testing.T) {
	for _, c := range []struct {
		name      string
		pass      bool
		delivered bool
	}{
		{"without a program the bounced frame is lost", false, false},
		{"with the pass program the bounced frame arrives", true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			topo := newTopo(t)
			a, b, l := pair(t, topo)
			if err := l.PinNeighbors(); err != nil {
				t.Fatal(err)
			}
			// GRO would also make veth deliver XDP_TX frames; turn it off
			// so that only the program can (ETHTOOL_SGRO).
			if err := b.Do(func() error { return ethtool(l.B.Iface, &ethtoolValue{cmd: 0x2c, data: 0}) }); err != nil {
				t.Fatal(err)
			}
			bounce := bounceProgram(t)
			err := a.Do(func() error {
				lk, err := link.AttachXDP(link.XDPOptions{Program: bounce, Interface: l.A.Index, Flags: link.XDPDriverMode})
				if err != nil {
					return err
				}
				t.Cleanup(func() { lk.Close() })
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if c.pass {
				if err := b.AttachXDPPass(l.B.Iface); err != nil {
					t.Fatal(err)
				}
			}
			fd := capture(t, b, l.B.Iface)
			marker := []byte("bounce-" + c.name)
			send(t, b, "10.200.0.1:9", marker)
			frame := nextIncoming(fd, marker)
			if got := frame != nil; got != c.delivered {
				t.Errorf("bounced frame delivered to b: %t, want %t", got, c.delivered)
			}
			if frame != nil && !bytes.Equal(frame[6:12], macB) {
				t.Errorf("bounced frame has source mac %v, want b's %v", net.HardwareAddr(frame[6:12]), macB)
			}
		})
	}
}

// nsState is what tells a topology's namespaces exist: their names and the
// inode numbers of the namespaces behind them.
type nsState struct {
	names  []string
	inodes map[nsID]string
}

func snapshot(t *testing.T, topo *Topology) nsState {
	t.Helper()
	s := nsState{inodes: map[nsID]string{}}
	for _, n := range topo.Nodes() {
		s.names = append(s.names, n.Netns())
		id, ok := statNs(filepath.Join(NetnsDir, n.Netns()))
		if !ok {
			t.Fatalf("namespace of %s not found", n.Name())
		}
		s.inodes[id] = n.Netns()
	}
	return s
}

// assertGone checks that nothing of a closed topology is left: no name
// under NetnsDir, no process (this one included) with a thread in or a
// descriptor to one of its namespaces, and none of the interface names in
// the root namespace.
func assertGone(t *testing.T, prefix string, s nsState, ifaces ...string) {
	t.Helper()
	entries, err := os.ReadDir(NetnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			t.Errorf("namespace %s left in %s", e.Name(), NetnsDir)
		}
	}
	for name, pids := range nsHolders(s.inodes) {
		t.Errorf("namespace %s still held by pids %v", name, pids)
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if slices.Contains(ifaces, l.Attrs().Name) {
			t.Errorf("interface %s left in the root namespace", l.Attrs().Name)
		}
	}
}

func TestCloseDeletesEverything(t *testing.T) {
	testenv.RequirePriv(t)
	topo, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer topo.Close() // in case the test fails before its own Close
	a, _, l := pair(t, topo)
	if err := a.AttachXDPPass(l.A.Iface); err != nil {
		t.Fatal(err)
	}
	s := snapshot(t, topo)
	if len(s.names) != 2 {
		t.Fatalf("namespaces %v, want 2", s.names)
	}
	if holders := nsHolders(s.inodes); len(holders) != 2 {
		t.Fatalf("holders of a live topology %v, want both namespaces held by this process", holders)
	}

	if err := topo.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	assertGone(t, topo.Prefix(), s, l.A.Iface, l.B.Iface)
	if err := topo.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if _, err := topo.AddNode("c"); !errors.Is(err, ErrClosed) {
		t.Errorf("AddNode after Close: %v, want ErrClosed", err)
	}
}

// threadNetns returns the identity of the calling thread's namespace.
func threadNetns(t *testing.T) nsID {
	t.Helper()
	id, ok := statNs(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if !ok {
		t.Fatal("cannot stat this thread's namespace")
	}
	return id
}

func TestPanicInDoStillCleaned(t *testing.T) {
	testenv.RequirePriv(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := threadNetns(t)

	var s nsState
	var prefix string
	var ifaces []string
	recovered := func() (r any) {
		defer func() { r = recover() }()
		topo, err := New()
		if err != nil {
			t.Fatal(err)
		}
		defer topo.Close()
		prefix = topo.Prefix()
		a, _, l := pair(t, topo)
		s = snapshot(t, topo)
		ifaces = []string{l.A.Iface, l.B.Iface}
		a.Do(func() error { panic("boom") })
		t.Error("Do returned after a panic")
		return nil
	}()

	pe, ok := recovered.(*PanicError)
	if !ok {
		t.Fatalf("recovered %T %v, want *PanicError", recovered, recovered)
	}
	if pe.Value != "boom" || !strings.HasSuffix(pe.Node, "-a") || !bytes.Contains(pe.Stack, []byte("topo_test.go")) {
		t.Errorf("PanicError{Node: %q, Value: %v}, stack without the panicking function:\n%s", pe.Node, pe.Value, pe.Stack)
	}
	assertGone(t, prefix, s, ifaces...)
	if after := threadNetns(t); after != before {
		t.Errorf("calling thread moved from netns %v to %v", before, after)
	}
}

func TestErrorInDoStillCleaned(t *testing.T) {
	testenv.RequirePriv(t)
	errFail := errors.New("setup failed")
	var s nsState
	var prefix string
	var ifaces []string
	err := func() error {
		topo, err := New()
		if err != nil {
			return err
		}
		defer topo.Close()
		prefix = topo.Prefix()
		a, _, l := pair(t, topo)
		s = snapshot(t, topo)
		ifaces = []string{l.A.Iface, l.B.Iface}
		return a.Do(func() error { return fmt.Errorf("in a: %w", errFail) })
	}()
	if !errors.Is(err, errFail) {
		t.Errorf("Do returned %v, want the function's error", err)
	}
	assertGone(t, prefix, s, ifaces...)
}

func TestDoReportsGoexit(t *testing.T) {
	topo := newTopo(t)
	a := addNodes(t, topo, "a")[0]
	err := a.Do(func() error { runtime.Goexit(); return nil })
	if err == nil || !strings.Contains(err.Error(), "Goexit") {
		t.Errorf("Do with Goexit returned %v, want an error naming Goexit", err)
	}
}

func TestDoRunsInTheNode(t *testing.T) {
	topo := newTopo(t)
	a := addNodes(t, topo, "a")[0]
	s := snapshot(t, topo)
	var inside nsID
	if err := a.Do(func() error { inside = threadNetns(t); return nil }); err != nil {
		t.Fatal(err)
	}
	if s.inodes[inside] != a.Netns() {
		t.Errorf("Do ran in netns %v, want %s's", inside, a.Netns())
	}
}

func TestClean(t *testing.T) {
	topo := newTopo(t)
	live := addNodes(t, topo, "live")[0]

	// A namespace like one a killed run leaves: mounted, held by nothing.
	stale := func(prefix string) string {
		name := prefix + "-stale"
		ns, err := createNetns(name)
		if err != nil {
			t.Fatal(err)
		}
		ns.Close()
		t.Cleanup(func() { deleteNetns(name) })
		return name
	}
	s1, s2 := stale("sl0000f1"), stale("sl0000f2")

	got, err := Clean("sl0000f1")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Removed, []string{s1}) {
		t.Errorf("Clean(sl0000f1) removed %v, want [%s]", got.Removed, s1)
	}

	got, err = CleanAll()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(got.Removed, s2) {
		t.Errorf("CleanAll removed %v, want %s among them", got.Removed, s2)
	}
	if slices.Contains(got.Removed, live.Netns()) {
		t.Errorf("CleanAll removed %s, a namespace of a live topology", live.Netns())
	}
	busy := false
	for _, b := range got.Busy {
		if b.Name == live.Netns() {
			busy = slices.Contains(b.PIDs, os.Getpid())
		}
	}
	if !busy {
		t.Errorf("CleanAll busy %v, want %s held by this process (%d)", got.Busy, live.Netns(), os.Getpid())
	}
	for _, name := range []string{s1, s2} {
		if _, err := os.Stat(filepath.Join(NetnsDir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still in %s: %v", name, NetnsDir, err)
		}
	}
	if _, err := os.Stat(filepath.Join(NetnsDir, live.Netns())); err != nil {
		t.Errorf("live namespace %s: %v", live.Netns(), err)
	}

	if _, err := Clean("slb-1"); !errors.Is(err, ErrInvalid) {
		t.Errorf("Clean(slb-1): %v, want ErrInvalid", err)
	}
}

func TestAddNodeRejectsBadNames(t *testing.T) {
	topo := newTopo(t)
	for _, name := range []string{"", "Client", "a/b", "-a", strings.Repeat("a", 33)} {
		if _, err := topo.AddNode(name); !errors.Is(err, ErrInvalid) {
			t.Errorf("AddNode(%q): %v, want ErrInvalid", name, err)
		}
	}
	addNodes(t, topo, "a")
	if _, err := topo.AddNode("a"); !errors.Is(err, ErrInvalid) {
		t.Errorf("second AddNode(a): %v, want ErrInvalid", err)
	}
}

func TestMultipathRouteAndLinkDown(t *testing.T) {
	topo := newTopo(t)
	n := addNodes(t, topo, "r", "x", "y")
	for i, peer := range n[1:] {
		_, err := topo.AddLink(
			LinkEnd{Node: n[0], Addrs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.201.%d.1/24", i))}, Queues: 2},
			LinkEnd{Node: peer, Addrs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.201.%d.2/24", i))}},
		)
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := n[0].EnableForwarding(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"net.ipv4.fib_multipath_hash_policy", "net.ipv6.fib_multipath_hash_policy"} {
		if v, err := n[0].Sysctl(s); err != nil || v != "1" {
			t.Errorf("%s = %q, %v; want 1 (L4 hash) on a router", s, v, err)
		}
	}
	gws := []netip.Addr{netip.MustParseAddr("10.201.0.2"), netip.MustParseAddr("10.201.1.2")}
	if err := n[0].AddRoute(Route{Dst: netip.MustParsePrefix("192.0.2.0/24"), Multipath: gws}); err != nil {
		t.Fatal(err)
	}
	routes, err := n[0].Netlink().RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{Dst: &net.IPNet{IP: net.IPv4(192, 0, 2, 0).To4(), Mask: net.CIDRMask(24, 32)}}, netlink.RT_FILTER_DST)
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 1 || len(routes[0].MultiPath) != 2 {
		t.Fatalf("routes to 192.0.2.0/24: %v, want one with two next hops", routes)
	}
	for i, nh := range routes[0].MultiPath {
		if !nh.Gw.Equal(gws[i].AsSlice()) {
			t.Errorf("next hop %d via %v, want %v", i, nh.Gw, gws[i])
		}
	}
	lk, err := n[0].Netlink().LinkByName("x")
	if err != nil {
		t.Fatal(err)
	}
	if q := lk.Attrs().NumTxQueues; q != 2 {
		t.Errorf("r/x has %d tx queues, want 2", q)
	}
	if err := n[0].AddRoute(Route{Dst: netip.MustParsePrefix("192.0.2.0/24"), Via: gws[0], Multipath: gws}); !errors.Is(err, ErrInvalid) {
		t.Errorf("route with both Via and Multipath: %v, want ErrInvalid", err)
	}

	if err := n[0].SetLinkUp("x", false); err != nil {
		t.Fatal(err)
	}
	lk, _ = n[0].Netlink().LinkByName("x")
	if lk.Attrs().Flags&net.FlagUp != 0 {
		t.Error("r/x still up after SetLinkUp(false)")
	}
	if err := n[0].SetLinkUp("x", true); err != nil {
		t.Fatal(err)
	}
	if err := n[0].SetLinkUp("nope", true); err == nil {
		t.Error("SetLinkUp of a missing interface succeeded")
	}
}

func TestLinkMTU(t *testing.T) {
	topo := newTopo(t)
	n := addNodes(t, topo, "a", "b", "c")
	l, err := topo.AddLink(LinkEnd{Node: n[0], MTU: 2000}, LinkEnd{Node: n[1], MTU: 1800})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []struct {
		node *Node
		name string
		want int
	}{{n[0], l.A.Iface, 2000}, {n[1], l.B.Iface, 1800}} {
		lk, err := e.node.Netlink().LinkByName(e.name)
		if err != nil {
			t.Fatal(err)
		}
		if got := lk.Attrs().MTU; got != e.want {
			t.Errorf("mtu of %s in %s = %d, want %d", e.name, e.node.Name(), got, e.want)
		}
	}
	for _, mtu := range []int{1279, 9001, -1} {
		if _, err := topo.AddLink(LinkEnd{Node: n[0], Iface: "bad", MTU: mtu}, LinkEnd{Node: n[2]}); !errors.Is(err, ErrInvalid) {
			t.Errorf("AddLink with mtu %d: %v, want ErrInvalid", mtu, err)
		}
	}
}
