package connlimit

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/dataplane/attach"
	"github.com/sluice-dp/sluice/dataplane/internal/bpfenc"
	"github.com/sluice-dp/sluice/dataplane/police"
	"github.com/sluice-dp/sluice/internal/pkttest"
)

// wire sends hand-made frames from the client end of the veth and reads
// what the server sends, so that a test plays TCP clients whose handshakes
// it controls step by step. Their addresses exist nowhere: the server
// reaches them through static neighbour entries, and the client kernel
// drops what it receives for them, without answering.
type wire struct {
	fd                   int
	ifindex              int
	clientMAC, serverMAC net.HardwareAddr
}

func (tp *topo) wire(t *testing.T, fakes ...netip.Addr) *wire {
	t.Helper()
	w := &wire{}
	tp.in(t, tp.server, func() {
		l, err := netlink.LinkByName(serverDev)
		if err != nil {
			t.Fatal(err)
		}
		w.serverMAC = l.Attrs().HardwareAddr
	})
	tp.in(t, tp.client, func() {
		l, err := netlink.LinkByName(clientDev)
		if err != nil {
			t.Fatal(err)
		}
		w.clientMAC, w.ifindex = l.Attrs().HardwareAddr, l.Attrs().Index
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(bpfenc.Htons(unix.ETH_P_ALL)))
		if err != nil {
			t.Fatalf("packet socket: %v", err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: bpfenc.Htons(unix.ETH_P_ALL), Ifindex: w.ifindex}); err != nil {
			t.Fatalf("bind packet socket: %v", err)
		}
		tv := unix.Timeval{Sec: 5}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			t.Fatal(err)
		}
		w.fd = fd
	})
	tp.in(t, tp.server, func() {
		l, err := netlink.LinkByName(serverDev)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range fakes {
			n := &netlink.Neigh{LinkIndex: l.Attrs().Index, State: netlink.NUD_PERMANENT, IP: a.AsSlice(), HardwareAddr: w.clientMAC}
			if err := netlink.NeighAdd(n); err != nil {
				t.Fatalf("add neighbour %v: %v", a, err)
			}
		}
	})
	return w
}

// segment builds a TCP segment from the fake client from to the server.
func (w *wire) segment(t *testing.T, from, to netip.AddrPort, seq, ack uint32, syn, rst bool) []byte {
	t.Helper()
	f := pkttest.Flow{SrcMAC: w.clientMAC, DstMAC: w.serverMAC, Src: from, Dst: to}
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(from.Port()), DstPort: layers.TCPPort(to.Port()),
		Seq: seq, Ack: ack, SYN: syn, RST: rst, ACK: !syn && !rst, Window: 65535,
	}
	return pkttest.Serialize(t, append(f.Headers(layers.IPProtocolTCP), tcp)...)
}

func (w *wire) send(t *testing.T, frame []byte) {
	t.Helper()
	sa := &unix.SockaddrLinklayer{Protocol: bpfenc.Htons(unix.ETH_P_ALL), Ifindex: w.ifindex, Halen: 6}
	copy(sa.Addr[:], frame[:6])
	if err := unix.Sendto(w.fd, frame, 0, sa); err != nil {
		t.Fatalf("send frame: %v", err)
	}
}

// handshake sends a SYN (sequence number 1) from a fake client and returns
// the sequence number of the server's SYN-ACK.
func (w *wire) handshake(t *testing.T, from, to netip.AddrPort) uint32 {
	t.Helper()
	w.send(t, w.segment(t, from, to, 1, 0, true, false))
	tcp := w.receive(t, "the SYN-ACK", from, func(tcp *layers.TCP) bool { return tcp.SYN && tcp.ACK })
	if tcp.Ack != 2 {
		t.Fatalf("SYN-ACK to %v acknowledges %d, want 2", from, tcp.Ack)
	}
	return tcp.Seq
}

// receive returns the next TCP segment to the fake client to for which
// match holds, waiting at most 5 s.
func (w *wire) receive(t *testing.T, what string, to netip.AddrPort, match func(*layers.TCP) bool) *layers.TCP {
	t.Helper()
	buf := make([]byte, 2048)
	for {
		n, _, err := unix.Recvfrom(w.fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatalf("waiting for %s to %v: %v", what, to, err)
		}
		p := gopacket.NewPacket(buf[:n], layers.LayerTypeEthernet, gopacket.Default)
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if tcp != nil && ip != nil && uint16(tcp.DstPort) == to.Port() && ip.DstIP.Equal(to.Addr().AsSlice()) && match(tcp) {
			return tcp
		}
	}
}

// finalACK is the ACK that completes the handshake of a fake client.
func (w *wire) finalACK(t *testing.T, from, to netip.AddrPort, isn uint32) []byte {
	return w.segment(t, from, to, 2, isn+1, false, false)
}

func counter(t *testing.T, l *Limiter, name string) uint64 {
	t.Helper()
	c, err := l.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c[name]
}

// TestHandshakeRace plays the case a SYN-time check cannot catch: two
// handshakes start while one place is left, and both final ACKs reach the
// program before the kernel has created either connection (two CPUs, or
// one receive batch). The program judges both ACKs with BPF_PROG_RUN
// first, as it would in that batch, then the kernel gets them: exactly one
// connection may be created. The server keeps a request socket per
// handshake, or, under a SYN flood, answers with SYN cookies and keeps
// nothing.
func TestHandshakeRace(t *testing.T) {
	for _, cookies := range []bool{false, true} {
		name := "request sockets"
		if cookies {
			name = "syn cookies"
		}
		t.Run(name, func(t *testing.T) { handshakeRace(t, cookies) })
	}
}

func handshakeRace(t *testing.T, cookies bool) {
	const max = 2
	tp := newTopo(t)
	if cookies {
		// 2: always answer with a cookie, as under a flood.
		tp.in(t, tp.server, func() {
			if err := os.WriteFile("/proc/sys/net/ipv4/tcp_syncookies", []byte("2"), 0o644); err != nil {
				t.Fatalf("enable syn cookies: %v", err)
			}
		})
	}
	a := netip.AddrPortFrom(netip.MustParseAddr("10.77.0.50"), 40001)
	b := netip.AddrPortFrom(netip.MustParseAddr("10.77.0.51"), 40002)
	to := netip.AddrPortFrom(serverV4, port)
	w := tp.wire(t, a.Addr(), b.Addr())
	l := tp.loadIn(t, map[uint16]Limit{port: {Max: max, Action: police.Drop}})
	tp.startAttached(t, l, attach.Native)
	srv := tp.listen(t, "tcp4", to)
	first := tp.mustDial(t, "tcp", to)
	waitCount(t, l, port, max-1)

	isnA := w.handshake(t, a, to)
	isnB := w.handshake(t, b, to)
	run := func(frame []byte) pkttest.Verdict { return tp.runServer(t, l, frame).Verdict }
	count := func() int64 {
		c, err := l.Counts()
		if err != nil {
			t.Fatal(err)
		}
		return c[port]
	}

	// An ACK that does not acknowledge the SYN-ACK reserves nothing: the
	// kernel will not complete a handshake with it.
	if v := run(w.segment(t, b, to, 2, isnB+7, false, false)); v != pkttest.XDPPass || count() != max-1 {
		t.Fatalf("wrong ACK: verdict %v, count %d; want XDP_PASS and %d", v, count(), max-1)
	}
	// Both final ACKs in one batch: the first takes the last place.
	if v := run(w.finalACK(t, a, to, isnA)); v != pkttest.XDPPass || count() != max {
		t.Fatalf("first final ACK: verdict %v, count %d; want XDP_PASS and %d", v, count(), max)
	}
	if v := run(w.finalACK(t, b, to, isnB)); v != pkttest.XDPDrop || count() != max {
		t.Fatalf("second final ACK: verdict %v, count %d; want XDP_DROP and %d", v, count(), max)
	}
	// A's ACK retransmitted keeps its place without taking another.
	if v := run(w.finalACK(t, a, to, isnA)); v != pkttest.XDPPass || count() != max {
		t.Fatalf("retransmitted final ACK: verdict %v, count %d; want XDP_PASS and %d", v, count(), max)
	}

	// Now the kernel gets both, through the attached program.
	w.send(t, w.finalACK(t, a, to, isnA))
	waitFor(t, "the server to accept A", func() (bool, string) {
		open, _ := srv.accepted()
		return open == max, "open " + itoa(open)
	})
	dropsBefore := counter(t, l, "drop_limit_ack")
	w.send(t, w.finalACK(t, b, to, isnB))
	waitFor(t, "B's final ACK to be refused", func() (bool, string) {
		n := counter(t, l, "drop_limit_ack")
		return n == dropsBefore+1, "drop_limit_ack " + itoa(int(n))
	})
	if open, total := srv.accepted(); open != max || total != max {
		t.Fatalf("server has %d open, %d accepted; want %d", open, total, max)
	}
	if n := tp.established(t, port); n != max {
		t.Fatalf("sock_diag shows %d established, want %d", n, max)
	}
	if n := tp.requests(t, port); cookies && n != 0 {
		t.Fatalf("%d request sockets with syn cookies, want 0", n)
	}
	if c := count(); c != max {
		t.Fatalf("count %d after the kernel created A, want %d", c, max)
	}
	if n := countEntries(t, l.objs.Pending); n != 0 {
		t.Errorf("%d reservations left after A was created, want 0", n)
	}

	// A place frees: B's retransmitted ACK gets in. The server aborts the
	// first connection, whose socket then reaches TCP_CLOSE without waiting
	// for any packet to cross the veth (TestCountFollowsConnections covers
	// the graceful closes).
	srv.abortFrom(t, first.LocalAddr())
	waitCount(t, l, port, max-1)
	w.send(t, w.finalACK(t, b, to, isnB))
	waitFor(t, "the server to accept B", func() (bool, string) {
		_, total := srv.accepted()
		return total == max+1, "accepted " + itoa(total)
	})
	waitCount(t, l, port, max)
}

// TestRefusedFinalACKRST refuses a handshake's final ACK at the limit with
// the rst action: the answer is the RST the client's TCP accepts in its
// ESTABLISHED state (RFC 9293 3.10.7.1: seq = the ACK's acknowledgement
// number, no ACK flag), built here with gopacket, both from BPF_PROG_RUN
// and on the wire from the attached program.
func TestRefusedFinalACKRST(t *testing.T) {
	tp := newTopo(t)
	a := netip.AddrPortFrom(netip.MustParseAddr("10.77.0.54"), 40005)
	b := netip.AddrPortFrom(netip.MustParseAddr("10.77.0.55"), 40006)
	to := netip.AddrPortFrom(serverV4, port)
	w := tp.wire(t, a.Addr(), b.Addr())
	l := tp.loadIn(t, map[uint16]Limit{port: {Max: 1, Action: police.RST}})
	// Generic: a veth delivers a native XDP_TX frame only when its peer
	// runs XDP too, and the client end has no program.
	tp.startAttached(t, l, attach.Generic)
	tp.listen(t, "tcp4", to)
	isnA := w.handshake(t, a, to)
	isnB := w.handshake(t, b, to)
	if res := tp.runServer(t, l, w.finalACK(t, a, to, isnA)); res.Verdict != pkttest.XDPPass {
		t.Fatalf("A's final ACK: verdict %v, want XDP_PASS", res.Verdict)
	}
	before, err := l.Counters()
	if err != nil {
		t.Fatal(err)
	}
	res := tp.runServer(t, l, w.finalACK(t, b, to, isnB))
	if res.Verdict != pkttest.XDPTX {
		t.Fatalf("B's final ACK at the limit: verdict %v, want XDP_TX", res.Verdict)
	}
	r := pkttest.Flow{SrcMAC: w.serverMAC, DstMAC: w.clientMAC, Src: to, Dst: b}
	want := pkttest.Serialize(t, append(r.Headers(layers.IPProtocolTCP), &layers.TCP{
		SrcPort: layers.TCPPort(to.Port()), DstPort: layers.TCPPort(b.Port()),
		Seq: isnB + 1, RST: true, Window: 0,
	})...)
	pkttest.Expect(t, want, res.Out)
	pkttest.VerifyChecksums(t, res.Packet)
	// The attached program sees the namespace's own traffic too, so only
	// the counters of refused ACKs are compared.
	for name, want := range map[string]uint64{"tx_rst_ack": 1, "drop_limit_ack": 0, "drop_rst_failed": 0} {
		if d := counter(t, l, name) - before[name]; d != want {
			t.Errorf("counter %s moved by %d, want %d", name, d, want)
		}
	}

	// Through the attached program, the RST reaches the client.
	w.send(t, w.finalACK(t, b, to, isnB))
	rst := w.receive(t, "the RST", b, func(tcp *layers.TCP) bool { return tcp.RST })
	if rst.Seq != isnB+1 || rst.ACK || rst.Ack != 0 {
		t.Errorf("RST on the wire: seq %d ack %d (ACK %v), want seq %d, no ACK", rst.Seq, rst.Ack, rst.ACK, isnB+1)
	}
	if c := counter(t, l, "tx_rst_ack"); c != before["tx_rst_ack"]+2 {
		t.Errorf("tx_rst_ack %d after the wire's ACK, want %d", c, before["tx_rst_ack"]+2)
	}
}

// TestSweepReleasesDeadHandshakes reserves places for two handshakes whose
// final ACK the kernel never gets, then resets one of them: the sweep
// releases that one's place and keeps the other's.
func TestSweepReleasesDeadHandshakes(t *testing.T) {
	tp := newTopo(t)
	c := netip.AddrPortFrom(netip.MustParseAddr("10.77.0.52"), 40003)
	d := netip.AddrPortFrom(netip.MustParseAddr("10.77.0.53"), 40004)
	to := netip.AddrPortFrom(serverV4, port)
	w := tp.wire(t, c.Addr(), d.Addr())
	l := tp.loadIn(t, map[uint16]Limit{port: {Max: 5, Action: police.RST}})
	// Sweeps run when the test calls them.
	l.sweepEvery, l.grace = time.Hour, 0
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	tp.listen(t, "tcp4", to)
	isnC := w.handshake(t, c, to)
	isnD := w.handshake(t, d, to)
	for _, ack := range [][]byte{w.finalACK(t, c, to, isnC), w.finalACK(t, d, to, isnD)} {
		if res := tp.runServer(t, l, ack); res.Verdict != pkttest.XDPPass {
			t.Fatalf("final ACK: verdict %v, want XDP_PASS", res.Verdict)
		}
	}
	waitCount(t, l, port, 2)
	if n, err := l.sweep(); err != nil || n != 0 {
		t.Fatalf("sweep with both handshakes alive released %d (%v), want 0", n, err)
	}
	// C's RST, in window (the SYN-ACK acknowledged sequence 2), kills its
	// request socket.
	w.send(t, w.segment(t, c, to, 2, 0, false, true))
	waitFor(t, "C's request socket to go", func() (bool, string) {
		n := tp.requests(t, port)
		return n == 1, "request sockets " + itoa(n)
	})
	if n, err := l.sweep(); err != nil || n != 1 {
		t.Fatalf("sweep after C's reset released %d (%v), want 1", n, err)
	}
	waitCount(t, l, port, 1)
	var f connlimitClFlow
	var v connlimitClPending
	it := l.objs.Pending.Iterate()
	for it.Next(&f, &v) {
		if got := binary.BigEndian.Uint16(binary.NativeEndian.AppendUint16(nil, f.Rport)); got != d.Port() {
			t.Errorf("reservation of port %d kept, want only D's (%d)", got, d.Port())
		}
	}
}
