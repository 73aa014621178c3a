package agent

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/internal/pkttest"
)

// egressCase is one packet toward the VM. want nil means "passed
// untouched": the output must equal the input.
type egressCase struct {
	name    string
	in      []byte
	verdict pkttest.TCAction
	want    []byte
	stats   map[string]uint64
	// conn is the connection-table entry the packet must leave behind.
	conn *Conn
}

func runEgress(t *testing.T, a *Agent, c egressCase) {
	t.Helper()
	before := readCounters(t, a)
	res := pkttest.Run(t, a.Egress(), c.in)
	if got := res.TC(); got != c.verdict {
		t.Errorf("action %v, want %v", got, c.verdict)
	}
	want := c.want
	if want == nil {
		want = c.in
	}
	if c.verdict != pkttest.TCActShot {
		pkttest.Expect(t, want, res.Out)
		if !bytes.Equal(want, res.Out) {
			t.Errorf("output differs from the expected frame byte for byte")
		}
		pkttest.VerifyChecksums(t, res.Packet)
	}
	checkStats(t, before, readCounters(t, a), c.stats)
	if c.conn != nil {
		checkConn(t, a, *c.conn)
	}
}

// checkConn finds the entry of c's client and app and compares it.
func checkConn(t testing.TB, a *Agent, want Conn) {
	t.Helper()
	conns, err := a.Connections()
	if err != nil {
		t.Fatalf("read connections: %v", err)
	}
	for _, c := range conns {
		if c.Client == want.Client && c.App == want.App && c.Proto == want.Proto {
			if c.VIP != want.VIP || c.Closing != want.Closing || c.Expired != want.Expired {
				t.Errorf("connection %+v, want %+v", c, want)
			}
			return
		}
	}
	t.Errorf("no connection %v→%v/%v in %+v", want.Client, want.App, want.Proto, conns)
}

func local(extra ...string) map[string]uint64 {
	m := map[string]uint64{"deliver_local": 1}
	for _, e := range extra {
		m[e]++
	}
	return m
}

func transparent(extra ...string) map[string]uint64 {
	m := map[string]uint64{"deliver_transparent": 1}
	for _, e := range extra {
		m[e]++
	}
	return m
}

func passed(reason string) map[string]uint64 { return map[string]uint64{"pass": 1, reason: 1} }

func dropped(reason string) map[string]uint64 { return map[string]uint64{"drop": 1, reason: 1} }

// TestDecapLocal: every encapsulation the LB produces (and GUE variant 0)
// for a local-mode VIP comes out as the inner packet, byte for byte, behind
// the same Ethernet header.
func TestDecapLocal(t *testing.T) {
	a := newAgent(t, Config{})
	syn4 := tcp(toVM(client4, withPort(vip4, 80)), pkttest.SYN, "")
	data4 := tcp(toVM(client4, withPort(vip4, 80)), pkttest.ACK|pkttest.PSH, "GET / HTTP/1.1\r\n\r\n")
	syn6 := tcp(toVM(client6, withPort(vip6, 80)), pkttest.SYN, "")
	udp4 := udp(toVM(client4, withPort(vip4, 53)), "query")
	udp6any := udp(toVM(client6, withPort(vip6, 9999)), "any port")
	opt4 := func() []byte {
		f := toVM(client4, withPort(vip4, 80))
		ls := f.Headers(layers.IPProtocolTCP)
		ls[1].(*layers.IPv4).Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
		return pkttest.Serialize(t, append(ls, &layers.TCP{SrcPort: 40000, DstPort: 80, SYN: true, Seq: 1, Window: 65535})...)
	}()
	// A router's "fragmentation needed" to the VIP about its SYN-ACK, which
	// the LB forwards to this backend.
	fragNeeded := icmpError(t, toVM(ap("203.0.113.1:0"), withPort(vip4, 0)), 3, 4, 1400,
		quote8(tcp(fromVM(withPort(vip4, 80), client4), pkttest.SYN|pkttest.ACK, "")))

	cases := []egressCase{
		{name: "gue/4in4", in: pkttest.GUE(outer(backend4), pkttest.IPPacket(syn4)), want: syn4, stats: local("decap_gue")},
		{name: "gue/4in4 data", in: pkttest.GUE(outer(backend4), pkttest.IPPacket(data4)), want: data4, stats: local("decap_gue")},
		{name: "gue/6in6", in: pkttest.GUE(outer(backend6), pkttest.IPPacket(syn6)), want: syn6, stats: local("decap_gue")},
		{name: "gue/4in6", in: pkttest.GUE(outer(backend6), pkttest.IPPacket(syn4)), want: syn4, stats: local("decap_gue")},
		{name: "gue/6in4", in: pkttest.GUE(outer(backend4), pkttest.IPPacket(syn6)), want: syn6, stats: local("decap_gue")},
		{name: "gue/udp", in: pkttest.GUE(outer(backend4), pkttest.IPPacket(udp4)), want: udp4, stats: local("decap_gue")},
		{name: "gue/all-ports vip", in: pkttest.GUE(outer(backend6), pkttest.IPPacket(udp6any)), want: udp6any, stats: local("decap_gue")},
		{name: "gue/inner ipv4 options", in: pkttest.GUE(outer(backend4), pkttest.IPPacket(opt4)), want: opt4, stats: local("decap_gue")},
		{name: "gue/icmp error to vip", in: pkttest.GUE(outer(backend4), pkttest.IPPacket(fragNeeded)), want: fragNeeded, stats: local("decap_gue")},
		{name: "gue0/4in4", in: gue0(outer(backend4), false, 0, 4, pkttest.IPPacket(syn4)), want: syn4, stats: local("decap_gue0")},
		{name: "gue0/4in4 options", in: gue0(outer(backend4), false, 2, 4, pkttest.IPPacket(data4)), want: data4, stats: local("decap_gue0")},
		{name: "gue0/6in6 largest options", in: gue0(outer(backend6), false, 31, 41, pkttest.IPPacket(syn6)), want: syn6, stats: local("decap_gue0")},
		{name: "gue0/4in6", in: gue0(outer(backend6), false, 1, 4, pkttest.IPPacket(syn4)), want: syn4, stats: local("decap_gue0")},
		{name: "ipip/4in4", in: pkttest.IPIP(outer(backend4), pkttest.IPPacket(syn4)), want: syn4, stats: local("decap_ipip")},
		{name: "ipip/6in6", in: pkttest.IPIP(outer(backend6), pkttest.IPPacket(syn6)), want: syn6, stats: local("decap_ipip")},
		{name: "ipip/4in6", in: pkttest.IPIP(outer(backend6), pkttest.IPPacket(data4)), want: data4, stats: local("decap_ipip")},
		{name: "ipip/6in4", in: pkttest.IPIP(outer(backend4), pkttest.IPPacket(udp6any)), want: udp6any, stats: local("decap_ipip")},
	}
	for _, c := range cases {
		c.verdict = pkttest.TCActOK
		t.Run(c.name, func(t *testing.T) { runEgress(t, a, c) })
	}
	if n := readCounters(t, a).Connections; n != 0 {
		t.Errorf("local mode left %d connection-table entries, want 0", n)
	}
}

// TestDecapTransparent: a transparent VIP's packets come out addressed to
// the application, everything else unchanged, with checksums fixed, and the
// connection is recorded in the reply direction.
func TestDecapTransparent(t *testing.T) {
	a := newAgent(t, Config{})
	vipT4p := withPort(vipT4, 80)
	vipT6p := withPort(vipT6, 80)
	dns4 := withPort(vipT4, 53)
	dns6 := withPort(vipT6, 53)
	app4dns := withPort(app4.Addr(), 8080)

	// A router's "fragmentation needed" to the VIP about the SYN-ACK the
	// VIP sent: the quote names the VIP, so it is translated too.
	icmpIn := icmpError(t, toVM(ap("203.0.113.1:0"), withPort(vipT4, 0)), 3, 4, 1400,
		quote8(tcp(fromVM(vipT4p, client4), pkttest.SYN|pkttest.ACK, "")))
	icmpOut := icmpError(t, toVM(ap("203.0.113.1:0"), withPort(app4.Addr(), 0)), 3, 4, 1400,
		quote8(tcp(fromVM(app4, client4), pkttest.SYN|pkttest.ACK, "")))
	ptbIn := icmpError(t, toVM(ap("[2001:db8:1::1]:0"), withPort(vipT6, 0)), 2, 0, 1280,
		pkttest.IPPacket(tcp(fromVM(vipT6p, client6), pkttest.ACK, "some reply data")))
	ptbOut := icmpError(t, toVM(ap("[2001:db8:1::1]:0"), withPort(app6.Addr(), 0)), 2, 0, 1280,
		pkttest.IPPacket(tcp(fromVM(app6, client6), pkttest.ACK, "some reply data")))

	cases := []egressCase{
		{
			name:  "tcp4 syn gue",
			in:    pkttest.GUE(outer(backend4), pkttest.IPPacket(tcp(toVM(client4, vipT4p), pkttest.SYN, ""))),
			want:  tcp(toVM(client4, app4), pkttest.SYN, ""),
			stats: transparent("decap_gue", "conn_insert"),
			conn:  &Conn{Proto: l4.TCP, Client: client4, App: app4, VIP: vipT4p},
		},
		{
			name:  "tcp4 data ipip, entry exists",
			in:    pkttest.IPIP(outer(backend4), pkttest.IPPacket(tcp(toVM(client4, vipT4p), pkttest.ACK|pkttest.PSH, "hello"))),
			want:  tcp(toVM(client4, app4), pkttest.ACK|pkttest.PSH, "hello"),
			stats: transparent("decap_ipip"),
			conn:  &Conn{Proto: l4.TCP, Client: client4, App: app4, VIP: vipT4p},
		},
		{
			name:  "udp4 gue0",
			in:    gue0(outer(backend4), false, 1, 4, pkttest.IPPacket(udp(toVM(client4, dns4), "query"))),
			want:  udp(toVM(client4, app4dns), "query"),
			stats: transparent("decap_gue0", "conn_insert"),
			conn:  &Conn{Proto: l4.UDP, Client: client4, App: app4dns, VIP: dns4},
		},
		{
			name:  "udp4 zero checksum stays zero",
			in:    pkttest.GUE(outer(backend4), pkttest.IPPacket(udpZero(t, toVM(ap("198.51.100.8:5353"), dns4), "no checksum"))),
			want:  udpZero(t, toVM(ap("198.51.100.8:5353"), app4dns), "no checksum"),
			stats: transparent("decap_gue", "conn_insert"),
			conn:  &Conn{Proto: l4.UDP, Client: ap("198.51.100.8:5353"), App: app4dns, VIP: dns4},
		},
		{
			name:  "tcp6 syn ip6ip6",
			in:    pkttest.IPIP(outer(backend6), pkttest.IPPacket(tcp(toVM(client6, vipT6p), pkttest.SYN, ""))),
			want:  tcp(toVM(client6, app6), pkttest.SYN, ""),
			stats: transparent("decap_ipip", "conn_insert"),
			conn:  &Conn{Proto: l4.TCP, Client: client6, App: app6, VIP: vipT6p},
		},
		{
			name:  "udp6 gue",
			in:    pkttest.GUE(outer(backend6), pkttest.IPPacket(udp(toVM(client6, dns6), "query6"))),
			want:  udp(toVM(client6, withPort(app6.Addr(), 8080)), "query6"),
			stats: transparent("decap_gue", "conn_insert"),
			conn:  &Conn{Proto: l4.UDP, Client: client6, App: withPort(app6.Addr(), 8080), VIP: dns6},
		},
		{
			name:  "tcp4 in ipv6 gue",
			in:    pkttest.GUE(outer(backend6), pkttest.IPPacket(tcp(toVM(ap("198.51.100.9:41000"), vipT4p), pkttest.SYN, ""))),
			want:  tcp(toVM(ap("198.51.100.9:41000"), app4), pkttest.SYN, ""),
			stats: transparent("decap_gue", "conn_insert"),
			conn:  &Conn{Proto: l4.TCP, Client: ap("198.51.100.9:41000"), App: app4, VIP: vipT4p},
		},
		{
			name:  "icmp4 frag needed about a vip flow",
			in:    pkttest.GUE(outer(backend4), pkttest.IPPacket(icmpIn)),
			want:  icmpOut,
			stats: transparent("decap_gue"),
		},
		{
			name:  "icmp6 packet too big about a vip flow",
			in:    pkttest.GUE(outer(backend6), pkttest.IPPacket(ptbIn)),
			want:  ptbOut,
			stats: transparent("decap_gue"),
		},
	}
	for _, c := range cases {
		c.verdict = pkttest.TCActOK
		t.Run(c.name, func(t *testing.T) { runEgress(t, a, c) })
	}
}

// TestEgressMalformed: everything that is not a well-formed tunnel to a
// configured VIP has a defined verdict and reason; what is not a tunnel to
// this backend passes untouched.
func TestEgressMalformed(t *testing.T) {
	a := newAgent(t, Config{})
	syn4 := tcp(toVM(client4, withPort(vip4, 80)), pkttest.SYN, "")
	syn6 := tcp(toVM(client6, withPort(vip6, 80)), pkttest.SYN, "")
	inner4 := pkttest.IPPacket(syn4)
	good := pkttest.GUE(outer(backend4), inner4)
	other := netip.MustParseAddr("10.1.0.99")

	// Inner packets with broken headers.
	innerEdit := func(fn func(ip []byte)) []byte {
		ip := append([]byte(nil), inner4...)
		fn(ip)
		return ip
	}
	badIHL := innerEdit(func(ip []byte) { ip[0] = 0x44 })
	frag := innerEdit(func(ip []byte) { ip[6] |= 0x20; copy(ip, ipv4Fix(append(make([]byte, 0), ip...), 0)) })
	long := innerEdit(func(ip []byte) { ip[3] += 4 })
	gre := pkttest.IPPacket(pkttest.Serialize(t, append(toVM(client4, withPort(vip4, 0)).Headers(layers.IPProtocolGRE), &layers.GRE{Protocol: layers.EthernetTypeIPv4})...))
	echo := pkttest.IPPacket(pkttest.ICMPEcho(toVM(client4, withPort(vip4, 0)), 1, 1))
	hbh6 := pkttest.IPPacket(func() []byte {
		f := toVM(client6, withPort(vip6, 80))
		ls := f.Headers(layers.IPProtocolIPv6HopByHop)
		hbh := &layers.IPv6HopByHop{}
		hbh.NextHeader = layers.IPProtocolTCP
		hbh.Options = []*layers.IPv6HopByHopOption{{OptionType: 1, OptionLength: 4, OptionData: []byte{0, 0, 0, 0}}}
		return pkttest.Serialize(t, append(ls, hbh, &layers.TCP{SrcPort: 40000, DstPort: 80, SYN: true, Seq: 1, Window: 65535})...)
	}())
	cutTCP := func() []byte {
		// An IP header that holds 10 bytes of a TCP header.
		ip := append([]byte(nil), inner4[:30]...)
		ip[2], ip[3] = 0, 30
		return ipv4Fix(ip, 0)
	}()
	outerHBH := func() []byte {
		f := outer(backend6)
		ls := f.Headers(layers.IPProtocolIPv6HopByHop)
		hbh := &layers.IPv6HopByHop{}
		hbh.NextHeader = layers.IPProtocolIPv4
		hbh.Options = []*layers.IPv6HopByHopOption{{OptionType: 1, OptionLength: 4, OptionData: []byte{0, 0, 0, 0}}}
		return pkttest.Serialize(t, append(ls, hbh, pktPayload(inner4))...)
	}()

	cases := []egressCase{
		// Not for us: passed untouched.
		{name: "arp", in: arp(t), stats: passed("pass_not_ip")},
		// (A frame too short for its IP header cannot be tested:
		// BPF_PROG_RUN refuses it before the program runs.)
		{name: "vlan tag", in: pkttest.GUE(func() pkttest.Flow { f := outer(backend4); f.VLAN = 7; return f }(), inner4), stats: passed("pass_vlan")},
		{name: "wrong outer destination", in: pkttest.GUE(outer(other), inner4), stats: passed("pass_not_backend")},
		{name: "wrong outer destination ipip6", in: pkttest.IPIP(outer(netip.MustParseAddr("fd00:1::99")), pkttest.IPPacket(syn6)), stats: passed("pass_not_backend")},
		{name: "plain tcp to the vm", in: tcp(toVM(client4, withPort(backend4, 22)), pkttest.SYN, ""), stats: passed("pass_not_encap")},
		{name: "udp to another port", in: pkttest.GUE(func() pkttest.Flow { f := outer(backend4); f.Dst = withPort(backend4, 6081); return f }(), inner4), stats: passed("pass_not_encap")},
		{name: "outer ipv6 extension header", in: outerHBH, stats: passed("pass_not_encap")},
		{name: "outer fragment", in: edit(good, func(b []byte) []byte { b[14+6] |= 0x20; return ipv4Fix(b, 14) }), stats: passed("pass_fragment")},

		// Tunnels to this backend that cannot be used.
		{name: "unknown vip address", in: pkttest.GUE(outer(backend4), pkttest.IPPacket(tcp(toVM(client4, ap("192.0.2.99:80")), pkttest.SYN, ""))), stats: dropped("drop_unknown_vip")},
		{name: "unknown vip port", in: pkttest.IPIP(outer(backend4), pkttest.IPPacket(tcp(toVM(client4, withPort(vip4, 81)), pkttest.SYN, ""))), stats: dropped("drop_unknown_vip")},
		{name: "vip of the other protocol", in: pkttest.GUE(outer(backend4), pkttest.IPPacket(udp(toVM(client4, withPort(vip4, 80)), "x"))), stats: dropped("drop_unknown_vip")},
		{name: "outer bad ihl", in: edit(good, func(b []byte) []byte { b[14] = 0x44; return ipv4Fix(b, 14) }), stats: dropped("drop_outer_bad")},
		{name: "outer length beyond frame", in: good[:len(good)-10], stats: dropped("drop_outer_truncated")},
		{name: "udp length lies", in: edit(good, func(b []byte) []byte { b[14+20+5] -= 2; return b }), stats: dropped("drop_outer_bad")},
		{name: "gue empty payload", in: gueRaw(outer(backend4), nil), stats: dropped("drop_outer_truncated")},
		{name: "gue version 2", in: gueRaw(outer(backend4), append([]byte{0x80, 4, 0, 0}, inner4...)), stats: dropped("drop_gue_bad")},
		{name: "gue variant 1 not ip", in: gueRaw(outer(backend4), append([]byte{0x50}, inner4[1:]...)), stats: dropped("drop_gue_bad")},
		{name: "gue0 control message", in: gue0(outer(backend4), true, 0, 0, inner4), stats: dropped("drop_gue_control")},
		{name: "gue0 unknown proto", in: gue0(outer(backend4), false, 0, 17, inner4), stats: dropped("drop_gue_proto")},
		{name: "gue0 options beyond packet", in: gueRaw(outer(backend4), []byte{0x1f, 4, 0, 0, 1, 2, 3, 4}), stats: dropped("drop_outer_truncated")},
		{name: "gue0 header cut", in: gueRaw(outer(backend4), []byte{0x00, 4}), stats: dropped("drop_outer_truncated")},
		{name: "inner header cut", in: pkttest.GUE(outer(backend4), inner4[:12]), stats: dropped("drop_inner_truncated")},
		{name: "inner length beyond tunnel", in: pkttest.GUE(outer(backend4), ipv4Fix(long, 0)), stats: dropped("drop_inner_truncated")},
		{name: "inner trailing bytes", in: pkttest.GUE(outer(backend4), append(append([]byte(nil), inner4...), 0, 0, 0, 0)), stats: dropped("drop_inner_bad")},
		{name: "inner bad ihl", in: pkttest.GUE(outer(backend4), ipv4Fix(badIHL, 0)), stats: dropped("drop_inner_bad")},
		{name: "inner version differs from gue0 proto", in: gue0(outer(backend4), false, 0, 41, inner4), stats: dropped("drop_inner_bad")},
		{name: "inner fragment", in: pkttest.GUE(outer(backend4), frag), stats: dropped("drop_inner_fragment")},
		{name: "inner gre", in: pkttest.GUE(outer(backend4), gre), stats: dropped("drop_inner_proto")},
		{name: "inner echo request", in: pkttest.GUE(outer(backend4), echo), stats: dropped("drop_inner_proto")},
		{name: "inner ipv6 extension header", in: pkttest.GUE(outer(backend6), hbh6), stats: dropped("drop_inner_proto")},
		{name: "inner tcp header cut", in: pkttest.GUE(outer(backend4), cutTCP), stats: dropped("drop_inner_truncated")},
	}
	for _, c := range cases {
		c.verdict = pkttest.TCActOK
		if c.stats["drop"] > 0 {
			c.verdict = pkttest.TCActShot
		}
		t.Run(c.name, func(t *testing.T) { runEgress(t, a, c) })
	}
}
