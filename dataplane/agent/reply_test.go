package agent

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/internal/pkttest"
)

// replyCase is one packet from the VM. want nil means "passed untouched".
type replyCase struct {
	name  string
	in    []byte
	want  []byte
	stats map[string]uint64
}

func runIngress(t *testing.T, a *Agent, c replyCase) {
	t.Helper()
	before := readCounters(t, a)
	res := pkttest.Run(t, a.Ingress(), c.in)
	if got := res.TC(); got != pkttest.TCActOK {
		t.Errorf("action %v, want %v", got, pkttest.TCActOK)
	}
	want := c.want
	if want == nil {
		want = c.in
	}
	pkttest.Expect(t, want, res.Out)
	if !bytes.Equal(want, res.Out) {
		t.Errorf("output differs from the expected frame byte for byte")
	}
	pkttest.VerifyChecksums(t, res.Packet)
	checkStats(t, before, readCounters(t, a), c.stats)
}

// request sends a client's packet to a transparent VIP through the egress
// program, which creates or refreshes the connection's entry.
func request(t *testing.T, a *Agent, frame []byte) {
	t.Helper()
	res := pkttest.Run(t, a.Egress(), pkttest.GUE(outer(backendOf(frame)), pkttest.IPPacket(frame)))
	if res.TC() != pkttest.TCActOK {
		t.Fatalf("request: action %v, want %v", res.TC(), pkttest.TCActOK)
	}
}

func backendOf(frame []byte) netip.Addr {
	if pkttest.IPPacket(frame)[0]>>4 == 4 {
		return backend4
	}
	return backend6
}

func rewritten(extra ...string) map[string]uint64 {
	m := map[string]uint64{"reply_rewritten": 1}
	for _, e := range extra {
		m[e]++
	}
	return m
}

func untracked() map[string]uint64 {
	return map[string]uint64{"reply_pass": 1, "reply_untracked": 1}
}

// TestReply: replies of tracked connections leave from the VIP, with
// checksums right; everything else the VM sends passes untouched.
func TestReply(t *testing.T) {
	a := newAgent(t, Config{})
	vipT4p := withPort(vipT4, 80)
	vipT6p := withPort(vipT6, 80)
	dns4 := withPort(vipT4, 53)
	dns6 := withPort(vipT6, 53)
	app4dns := withPort(app4.Addr(), 8080)
	app6dns := withPort(app6.Addr(), 8080)
	zeroClient := ap("198.51.100.8:5353")

	request(t, a, tcp(toVM(client4, vipT4p), pkttest.SYN, ""))
	request(t, a, tcp(toVM(client6, vipT6p), pkttest.SYN, ""))
	request(t, a, udp(toVM(client4, dns4), "q"))
	request(t, a, udpZero(t, toVM(zeroClient, dns4), "q"))
	request(t, a, udp(toVM(client6, dns6), "q"))

	synack4 := tcp(fromVM(app4, client4), pkttest.SYN|pkttest.ACK, "")
	synack6 := tcp(fromVM(app6, client6), pkttest.SYN|pkttest.ACK, "")
	cases := []replyCase{
		{name: "tcp4 syn-ack", in: synack4, want: tcp(fromVM(vipT4p, client4), pkttest.SYN|pkttest.ACK, ""), stats: rewritten()},
		{name: "tcp4 data", in: tcp(fromVM(app4, client4), pkttest.ACK|pkttest.PSH, "HTTP/1.1 200 OK\r\n\r\n"),
			want: tcp(fromVM(vipT4p, client4), pkttest.ACK|pkttest.PSH, "HTTP/1.1 200 OK\r\n\r\n"), stats: rewritten()},
		{name: "tcp6 syn-ack", in: synack6, want: tcp(fromVM(vipT6p, client6), pkttest.SYN|pkttest.ACK, ""), stats: rewritten()},
		{name: "udp4", in: udp(fromVM(app4dns, client4), "answer"), want: udp(fromVM(dns4, client4), "answer"), stats: rewritten()},
		{name: "udp4 zero checksum", in: udpZero(t, fromVM(app4dns, zeroClient), "answer"), want: udpZero(t, fromVM(dns4, zeroClient), "answer"), stats: rewritten()},
		{name: "udp6", in: udp(fromVM(app6dns, client6), "answer6"), want: udp(fromVM(dns6, client6), "answer6"), stats: rewritten()},
		{
			name: "icmp4 frag needed about a reply",
			in:   icmpError(t, fromVM(withPort(app4.Addr(), 0), withPort(client4.Addr(), 0)), 3, 4, 1400, quote8(synack4)),
			want: icmpError(t, fromVM(withPort(vipT4, 0), withPort(client4.Addr(), 0)), 3, 4, 1400,
				quote8(tcp(fromVM(vipT4p, client4), pkttest.SYN|pkttest.ACK, ""))),
			stats: rewritten("reply_icmp_rewritten"),
		},
		{
			// ICMPv6 quotes the whole packet here, so the quoted TCP
			// checksum is in it and must be right too.
			name: "icmp6 packet too big about a reply",
			in:   icmpError(t, fromVM(withPort(app6.Addr(), 0), withPort(client6.Addr(), 0)), 2, 0, 1280, pkttest.IPPacket(synack6)),
			want: icmpError(t, fromVM(withPort(vipT6, 0), withPort(client6.Addr(), 0)), 2, 0, 1280,
				pkttest.IPPacket(tcp(fromVM(vipT6p, client6), pkttest.SYN|pkttest.ACK, ""))),
			stats: rewritten("reply_icmp_rewritten"),
		},
		{
			name: "icmp6 unreachable quoting a udp reply",
			in:   icmpError(t, fromVM(withPort(app6.Addr(), 0), withPort(client6.Addr(), 0)), 1, 4, 0, pkttest.IPPacket(udp(fromVM(app6dns, client6), "answer6"))),
			want: icmpError(t, fromVM(withPort(vipT6, 0), withPort(client6.Addr(), 0)), 1, 4, 0,
				pkttest.IPPacket(udp(fromVM(dns6, client6), "answer6"))),
			stats: rewritten("reply_icmp_rewritten"),
		},
		{name: "untracked client", in: tcp(fromVM(app4, ap("198.51.100.99:40000")), pkttest.SYN|pkttest.ACK, ""), stats: untracked()},
		{name: "untracked app port", in: tcp(fromVM(withPort(app4.Addr(), 22), client4), pkttest.ACK, ""), stats: untracked()},
		{name: "untracked protocol", in: tcp(fromVM(app4, zeroClient), pkttest.ACK, ""), stats: untracked()},
		{name: "untracked icmp error", in: icmpError(t, fromVM(withPort(app4.Addr(), 0), ap("198.51.100.99:0")), 3, 4, 1400,
			quote8(tcp(fromVM(app4, ap("198.51.100.99:40000")), pkttest.SYN|pkttest.ACK, ""))), stats: untracked()},
		{name: "echo request", in: pkttest.ICMPEcho(fromVM(withPort(app4.Addr(), 0), withPort(client4.Addr(), 0)), 7, 1),
			stats: map[string]uint64{"reply_pass": 1, "reply_other": 1}},
		{name: "arp", in: arp(t), stats: map[string]uint64{"reply_pass": 1, "reply_other": 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runIngress(t, a, c) })
	}
}

// TestExpiry: entries end after a FIN or RST plus the grace time, or when
// idle; a reply after that passes untouched and removes the entry.
func TestExpiry(t *testing.T) {
	const grace = 30 * time.Millisecond
	// Coarse clock ticks are a few milliseconds; wait well past them.
	const wait = 150 * time.Millisecond
	a := newAgent(t, Config{TCPClosing: grace, UDPIdle: grace, TCPIdle: time.Hour})
	vipT4p := withPort(vipT4, 80)
	dns4 := withPort(vipT4, 53)
	app4dns := withPort(app4.Addr(), 8080)

	t.Run("tcp fin from client", func(t *testing.T) {
		c := ap("198.51.100.21:40000")
		request(t, a, tcp(toVM(c, vipT4p), pkttest.SYN, ""))
		request(t, a, tcp(toVM(c, vipT4p), pkttest.FIN|pkttest.ACK, ""))
		checkConn(t, a, Conn{Proto: l4.TCP, Client: c, App: app4, VIP: vipT4p, Closing: true})
		// Within the grace time the rest of the close is still rewritten.
		runIngress(t, a, replyCase{in: tcp(fromVM(app4, c), pkttest.FIN|pkttest.ACK, ""),
			want: tcp(fromVM(vipT4p, c), pkttest.FIN|pkttest.ACK, ""), stats: rewritten()})
		time.Sleep(wait)
		checkConn(t, a, Conn{Proto: l4.TCP, Client: c, App: app4, VIP: vipT4p, Closing: true, Expired: true})
		runIngress(t, a, replyCase{in: tcp(fromVM(app4, c), pkttest.ACK, ""),
			stats: map[string]uint64{"reply_pass": 1, "reply_expired": 1, "conn_expired": 1}})
		// The expired entry is gone: the next reply is simply untracked.
		runIngress(t, a, replyCase{in: tcp(fromVM(app4, c), pkttest.ACK, ""), stats: untracked()})
	})
	t.Run("tcp rst from app", func(t *testing.T) {
		c := ap("198.51.100.22:40000")
		request(t, a, tcp(toVM(c, vipT4p), pkttest.SYN, ""))
		runIngress(t, a, replyCase{in: tcp(fromVM(app4, c), pkttest.RST, ""),
			want: tcp(fromVM(vipT4p, c), pkttest.RST, ""), stats: rewritten()})
		checkConn(t, a, Conn{Proto: l4.TCP, Client: c, App: app4, VIP: vipT4p, Closing: true})
		time.Sleep(wait)
		runIngress(t, a, replyCase{in: tcp(fromVM(app4, c), pkttest.RST, ""),
			stats: map[string]uint64{"reply_pass": 1, "reply_expired": 1, "conn_expired": 1}})
	})
	t.Run("tcp open connection does not expire", func(t *testing.T) {
		c := ap("198.51.100.23:40000")
		request(t, a, tcp(toVM(c, vipT4p), pkttest.SYN, ""))
		time.Sleep(wait)
		checkConn(t, a, Conn{Proto: l4.TCP, Client: c, App: app4, VIP: vipT4p})
		runIngress(t, a, replyCase{in: tcp(fromVM(app4, c), pkttest.ACK, ""),
			want: tcp(fromVM(vipT4p, c), pkttest.ACK, ""), stats: rewritten()})
	})
	t.Run("tcp syn reopens a closing entry", func(t *testing.T) {
		c := ap("198.51.100.24:40000")
		request(t, a, tcp(toVM(c, vipT4p), pkttest.SYN, ""))
		request(t, a, tcp(toVM(c, vipT4p), pkttest.RST, ""))
		checkConn(t, a, Conn{Proto: l4.TCP, Client: c, App: app4, VIP: vipT4p, Closing: true})
		request(t, a, tcp(toVM(c, vipT4p), pkttest.SYN, ""))
		checkConn(t, a, Conn{Proto: l4.TCP, Client: c, App: app4, VIP: vipT4p})
	})
	t.Run("udp idle", func(t *testing.T) {
		c := ap("198.51.100.25:5000")
		request(t, a, udp(toVM(c, dns4), "q"))
		runIngress(t, a, replyCase{in: udp(fromVM(app4dns, c), "a"), want: udp(fromVM(dns4, c), "a"), stats: rewritten()})
		time.Sleep(wait)
		checkConn(t, a, Conn{Proto: l4.UDP, Client: c, App: app4dns, VIP: dns4, Expired: true})
		runIngress(t, a, replyCase{in: udp(fromVM(app4dns, c), "a"),
			stats: map[string]uint64{"reply_pass": 1, "reply_expired": 1, "conn_expired": 1}})
	})
	t.Run("udp expired entry is replaced by a new request", func(t *testing.T) {
		c := ap("198.51.100.26:5000")
		request(t, a, udp(toVM(c, dns4), "q"))
		time.Sleep(wait)
		before := readCounters(t, a)
		request(t, a, udp(toVM(c, dns4), "q"))
		checkStats(t, before, readCounters(t, a), transparent("decap_gue", "conn_expired", "conn_insert"))
		checkConn(t, a, Conn{Proto: l4.UDP, Client: c, App: app4dns, VIP: dns4})
	})
}
