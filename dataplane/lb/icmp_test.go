package lb

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/internal/pkttest"
	"github.com/sluice-dp/sluice/internal/testenv"
)

// Tests of the ICMP paths of the program: echo replies from VIP addresses,
// ICMP errors about VIP flows forwarded to the flow's backend, and the
// "fragmentation needed" / "packet too big" messages the LB generates itself.

var (
	icmpRouter4 = netip.MustParseAddr("203.0.113.254")
	icmpRouter6 = netip.MustParseAddr("2001:db8:ff::1")
)

// icmpError builds an ICMP (IPv4) or ICMPv6 (IPv6) error of type and code
// from f.Src to f.Dst: the 4-byte field after the checksum (unused, or the
// next-hop MTU) holds rest, then comes the quote.
func icmpError(t testing.TB, f pkttest.Flow, typ, code uint8, rest uint32, quote []byte) []byte {
	t.Helper()
	var field [4]byte
	binary.BigEndian.PutUint32(field[:], rest)
	if f.Src.Addr().Is4() {
		return pkttest.Serialize(t, append(f.Headers(layers.IPProtocolICMPv4),
			&layers.ICMPv4{
				TypeCode: layers.CreateICMPv4TypeCode(typ, code),
				Id:       binary.BigEndian.Uint16(field[0:]),
				Seq:      binary.BigEndian.Uint16(field[2:]),
			},
			gopacket.Payload(quote))...)
	}
	return pkttest.Serialize(t, append(f.Headers(layers.IPProtocolICMPv6),
		&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, code)},
		gopacket.Payload(append(field[:], quote...)))...)
}

// icmpQuote is the start of the packet a VIP sent to a client, as the ICMP
// error about it quotes it: IPv4 header and 8 bytes (RFC 792), or for IPv6
// as much as the test wants (RFC 4443 quotes as much as fits).
func icmpQuote(vip, client netip.AddrPort, n int) []byte {
	f := pkttest.Flow{Src: vip, Dst: client, DF: vip.Addr().Is4(), Payload: make([]byte, 64)}
	ip := pkttest.IPPacket(pkttest.TCP(f, pkttest.ACK|pkttest.PSH))
	return ip[:min(n, len(ip))]
}

func TestICMPEcho(t *testing.T) {
	vip4 := netip.MustParseAddr("192.0.2.30")
	vip6 := netip.MustParseAddr("2001:db8:30::30")
	client4 := netip.MustParseAddr("198.51.100.30")
	client6 := netip.MustParseAddr("2001:db8:c30::1")
	payload := []byte("sluice echo payload, 32 bytes..")

	// request is what the client sends; every case but the non-VIP one
	// targets an address that has a VIP (on some port and protocol only).
	request := func(src, dst netip.Addr, vlan uint16) pkttest.Flow {
		return pkttest.Flow{
			SrcMAC: clientMAC, DstMAC: nodeMAC, VLAN: vlan,
			Src: netip.AddrPortFrom(src, 0), Dst: netip.AddrPortFrom(dst, 0),
			TTL: 57, ID: 0x1234, Payload: payload,
		}
	}
	// reply is the answer built independently: MACs and addresses swapped,
	// TTL 64, the rest (identifier, sequence, payload, IPv4 id) echoed.
	reply := func(req pkttest.Flow) []byte {
		r := req
		r.SrcMAC, r.DstMAC = req.DstMAC, req.SrcMAC
		r.Src, r.Dst = req.Dst, req.Src
		r.TTL = 64
		return pkttest.ICMPEchoReply(r, 0x4242, 7)
	}
	timestamp := func(f pkttest.Flow) []byte {
		return pkttest.Serialize(t, append(f.Headers(layers.IPProtocolICMPv4),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeTimestampRequest, 0), Id: 1, Seq: 1},
			gopacket.Payload(make([]byte, 12)))...)
	}
	nodeInfo := func(f pkttest.Flow) []byte {
		// ICMPv6 node information query (RFC 4620), type 139.
		return pkttest.Serialize(t, append(f.Headers(layers.IPProtocolICMPv6),
			&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(139, 0)},
			gopacket.Payload(make([]byte, 12)))...)
	}

	cases := []struct {
		name    string
		in      []byte
		verdict pkttest.Verdict
		want    []byte // nil: the frame must come out unchanged
		stats   map[string]uint64
	}{
		{
			name: "IPv4 echo request to a VIP address is answered", in: pkttest.ICMPEcho(request(client4, vip4, 0), 0x4242, 7),
			verdict: pkttest.XDPTX, want: reply(request(client4, vip4, 0)),
			stats: connStatsOf("tx", "icmp_echo_reply"),
		},
		{
			name: "IPv6 echo request to a VIP address is answered", in: pkttest.ICMPEcho(request(client6, vip6, 0), 0x4242, 7),
			verdict: pkttest.XDPTX, want: reply(request(client6, vip6, 0)),
			stats: connStatsOf("tx", "icmp_echo_reply"),
		},
		{
			name: "IPv4 echo request with a VLAN tag is answered on the VLAN", in: pkttest.ICMPEcho(request(client4, vip4, 42), 0x4242, 7),
			verdict: pkttest.XDPTX, want: reply(request(client4, vip4, 42)),
			stats: connStatsOf("tx", "icmp_echo_reply"),
		},
		{
			name: "IPv6 echo request with a VLAN tag is answered on the VLAN", in: pkttest.ICMPEcho(request(client6, vip6, 42), 0x4242, 7),
			verdict: pkttest.XDPTX, want: reply(request(client6, vip6, 42)),
			stats: connStatsOf("tx", "icmp_echo_reply"),
		},
		{
			name:    "IPv4 echo request to another address goes to the stack",
			in:      pkttest.ICMPEcho(request(client4, netip.MustParseAddr("192.0.2.31"), 0), 0x4242, 7),
			verdict: pkttest.XDPPass, stats: connStatsOf("pass", "pass_not_vip"),
		},
		{
			name:    "IPv6 echo request to another address goes to the stack",
			in:      pkttest.ICMPEcho(request(client6, netip.MustParseAddr("2001:db8:30::31"), 0), 0x4242, 7),
			verdict: pkttest.XDPPass, stats: connStatsOf("pass", "pass_not_vip"),
		},
		{
			name: "IPv4 timestamp request to a VIP address is dropped", in: timestamp(request(client4, vip4, 0)),
			verdict: pkttest.XDPDrop, stats: connStatsOf("drop", "drop_icmp"),
		},
		{
			name: "IPv6 node information query to a VIP address is dropped", in: nodeInfo(request(client6, vip6, 0)),
			verdict: pkttest.XDPDrop, stats: connStatsOf("drop", "drop_icmp"),
		},
		{
			name:    "IPv4 echo reply to a VIP address is dropped",
			in:      pkttest.ICMPEchoReply(request(client4, vip4, 0), 1, 1),
			verdict: pkttest.XDPDrop, stats: connStatsOf("drop", "drop_icmp"),
		},
	}

	l := newLB(t, Options{RingSize: connRingSize})
	addVIP(t, l, VIP{Addr: vip4, Port: 80, Proto: l4.TCP}, VIPOptions{}, be("10.3.0.1"))
	addVIP(t, l, VIP{Addr: vip6, Port: 53, Proto: l4.UDP}, VIPOptions{}, be("fd00:3::1"))
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			orig := append([]byte(nil), c.in...)
			res, d := connRun(t, l, c.in)
			if res.Verdict != c.verdict {
				t.Errorf("verdict %v, want %v", res.Verdict, c.verdict)
			}
			connCheckDeltas(t, "counters", d, c.stats)
			switch {
			case c.want != nil:
				pkttest.Expect(t, c.want, res.Out)
				pkttest.VerifyChecksums(t, res.Packet)
			case c.verdict == pkttest.XDPPass:
				pkttest.Expect(t, orig, res.Out)
			}
		})
	}
}

func TestICMPErrorForward(t *testing.T) {
	type errorCase struct {
		name string
		fam  connFamily
		// sent builds the error from the client flow and the VIP it
		// reached; nil sends the standard one for the family (IPv4
		// fragmentation needed, IPv6 packet too big, from a router).
		sent func(t testing.TB, client, vip netip.AddrPort) (pkttest.Flow, []byte)
		// entry: the flow sent a SYN before the ring moved it, so the
		// error must follow its connection-table entry.
		entry   bool
		verdict pkttest.Verdict
		stats   map[string]uint64
	}
	fromRouter := func(vip netip.AddrPort) pkttest.Flow {
		router := icmpRouter4
		if vip.Addr().Is6() {
			router = icmpRouter6
		}
		return pkttest.Flow{
			SrcMAC: clientMAC, DstMAC: nodeMAC, TOS: 0xc0,
			Src: netip.AddrPortFrom(router, 0), Dst: netip.AddrPortFrom(vip.Addr(), 0),
		}
	}
	standard := func(t testing.TB, client, vip netip.AddrPort) (pkttest.Flow, []byte) {
		f := fromRouter(vip)
		if vip.Addr().Is4() {
			return f, icmpError(t, f, layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded, 1400, icmpQuote(vip, client, 28))
		}
		return f, icmpError(t, f, layers.ICMPv6TypePacketTooBig, 0, 1280, icmpQuote(vip, client, 1000))
	}
	otherPort := func(t testing.TB, client, vip netip.AddrPort) (pkttest.Flow, []byte) {
		f := fromRouter(vip)
		other := netip.AddrPortFrom(vip.Addr(), vip.Port()+1)
		return f, icmpError(t, f, layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeHost, 0, icmpQuote(other, client, 28))
	}
	otherSource := func(t testing.TB, client, vip netip.AddrPort) (pkttest.Flow, []byte) {
		// Sent to the VIP, quoting a packet from another VIP: a forged or
		// misrouted error, which must not steer anything.
		f := fromRouter(vip)
		other := netip.AddrPortFrom(icmpOtherVIP4, vip.Port())
		return f, icmpError(t, f, layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeHost, 0, icmpQuote(other, client, 28))
	}
	quotingUDP := func(t testing.TB, client, vip netip.AddrPort) (pkttest.Flow, []byte) {
		// The quoted flow is UDP to the port of a TCP VIP: no VIP.
		f := fromRouter(vip)
		q := pkttest.IPPacket(pkttest.UDP(pkttest.Flow{Src: vip, Dst: client}))
		return f, icmpError(t, f, layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort, 0, q[:28])
	}
	tooBig := func(t testing.TB, client, vip netip.AddrPort) (pkttest.Flow, []byte) {
		// An error that cannot be encapsulated within the tunnel MTU is
		// dropped: the LB never answers an ICMP error with another.
		f := fromRouter(vip)
		f.DF = true
		q := icmpQuote(vip, client, 28)
		q = append(q, make([]byte, 1500-28-20-8+1)...)
		return f, icmpError(t, f, layers.ICMPv4TypeTimeExceeded, 0, 0, q)
	}
	v4, v6 := connFamilies[0], connFamilies[1]
	fwd := func(conn ...string) map[string]uint64 {
		return connBalanced(append(conn, "icmp_err_forward")...)
	}
	cases := []errorCase{
		{
			name: "IPv4 frag needed about a known flow goes to its entry's backend", fam: v4, entry: true,
			verdict: pkttest.XDPTX, stats: fwd("conn_hit"),
		},
		{
			name: "IPv6 packet too big about a known flow goes to its entry's backend", fam: v6, entry: true,
			verdict: pkttest.XDPTX, stats: fwd("conn_hit"),
		},
		{
			name: "IPv4 frag needed about an unknown flow follows the ring", fam: v4,
			verdict: pkttest.XDPTX, stats: fwd("conn_miss", "conn_miss_non_syn"),
		},
		{
			name: "IPv6 packet too big about an unknown flow follows the ring", fam: v6,
			verdict: pkttest.XDPTX, stats: fwd("conn_miss", "conn_miss_non_syn"),
		},
		{
			name: "error quoting a port without a VIP is dropped", fam: v4, sent: otherPort,
			verdict: pkttest.XDPDrop, stats: connStatsOf("drop", "drop_icmp"),
		},
		{
			name: "error quoting another protocol than the VIP's is dropped", fam: v4, sent: quotingUDP,
			verdict: pkttest.XDPDrop, stats: connStatsOf("drop", "drop_icmp"),
		},
		{
			name: "error quoting a packet from another address is dropped", fam: v4, sent: otherSource,
			verdict: pkttest.XDPDrop, stats: connStatsOf("drop", "drop_icmp"),
		},
		{
			name: "error too big for the tunnel is dropped, not answered", fam: v4, sent: tooBig, entry: true,
			verdict: pkttest.XDPDrop, stats: connStatsOf("conn_hit", "drop", "drop_too_big"),
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newLB(t, Options{RingSize: connRingSize})
			cpu := testenv.LockAnyCPU(t)
			seed := l.Config().Seed
			v := VIP{Addr: c.fam.vip, Port: 443, Proto: l4.TCP}
			base := c.fam.backends(2)
			addVIP(t, l, v, VIPOptions{}, base...)
			if c.fam.vip.Is4() {
				addVIP(t, l, VIP{Addr: icmpOtherVIP4, Port: 443, Proto: l4.TCP}, VIPOptions{}, base...)
			}
			vipAP := netip.AddrPortFrom(v.Addr, v.Port)
			client, grown, first, moved := connMovingFlow(t, c.fam, base,
				netip.AddrPortFrom(c.fam.client, 50000), vipAP, l.Options().RingSize, seed)
			h := modelFlowHash(client, vipAP, seed)

			if c.entry {
				f := connFlow(client, vipAP)
				in := pkttest.TCP(f, pkttest.SYN)
				res, d := connRun(t, l, in)
				connExpectGUE(t, "SYN", res, in, f, first, h)
				connCheckDeltas(t, "SYN", d, connBalanced("conn_miss", "conn_miss_syn"))
			}
			if err := l.SetBackends(v, grown); err != nil {
				t.Fatalf("grow the backend set: %v", err)
			}
			entries := len(connTable(t, l, cpu))

			sent := c.sent
			if sent == nil {
				sent = standard
			}
			f, in := sent(t, client, vipAP)
			orig := append([]byte(nil), in...)
			res, d := connRun(t, l, in)
			connCheckDeltas(t, "ICMP error", d, c.stats)
			if res.Verdict != c.verdict {
				t.Fatalf("verdict %v, want %v", res.Verdict, c.verdict)
			}
			if c.verdict == pkttest.XDPTX {
				// The error travels to the backend of the flow it quotes;
				// the outer source port comes from that flow's hash too,
				// so a backend's RSS puts it on the flow's queue.
				want := moved
				if c.entry {
					want = first
				}
				connExpectGUE(t, "ICMP error", res, orig, f, want, h)
			}
			if n := len(connTable(t, l, cpu)); n != entries {
				t.Errorf("the ICMP error changed the connection table from %d to %d entries", entries, n)
			}
		})
	}
}

var icmpOtherVIP4 = netip.MustParseAddr("192.0.2.21")

func TestICMPTooBigGenerated(t *testing.T) {
	v4, v6 := connFamilies[0], connFamilies[1]
	cases := []struct {
		name    string
		fam     connFamily
		encap   Encap
		backend netip.Addr
		vlan    uint16
		noDF    bool
		// overhead is what the encapsulation adds, from the wire format:
		// outer IPv4 20 or IPv6 40, plus UDP 8 for GUE.
		overhead int
	}{
		{name: "IPv4 over GUE/IPv4", fam: v4, encap: GUE, backend: v4.backend(1), overhead: 28},
		{name: "IPv4 over IPIP", fam: v4, encap: IPIP, backend: v4.backend(1), overhead: 20},
		{name: "IPv4 over GUE/IPv6", fam: v4, encap: GUE, backend: v6.backend(1), overhead: 48},
		{name: "IPv4 in IPv6", fam: v4, encap: IPIP, backend: v6.backend(1), overhead: 40},
		{name: "IPv4 with a VLAN tag over GUE/IPv4", fam: v4, encap: GUE, backend: v4.backend(1), vlan: 300, overhead: 28},
		{name: "IPv6 over GUE/IPv6", fam: v6, encap: GUE, backend: v6.backend(1), overhead: 48},
		{name: "IPv6 over IP6IP6", fam: v6, encap: IPIP, backend: v6.backend(1), overhead: 40},
		{name: "IPv6 with a VLAN tag over GUE/IPv6", fam: v6, encap: GUE, backend: v6.backend(1), vlan: 300, overhead: 48},
		{name: "IPv4 without DF is dropped", fam: v4, encap: GUE, backend: v4.backend(1), noDF: true, overhead: 28},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newLB(t, Options{RingSize: connRingSize})
			mtu := l.Config().TunnelMTU
			v := VIP{Addr: c.fam.vip, Port: 443, Proto: l4.TCP}
			addVIP(t, l, v, VIPOptions{Encap: c.encap}, Backend{Addr: c.backend, Weight: 1})
			client := netip.AddrPortFrom(c.fam.client, 40404)
			vipAP := netip.AddrPortFrom(v.Addr, v.Port)

			// One byte more than fits: IP length = MTU − overhead + 1.
			hlen := 20
			if c.fam.vip.Is6() {
				hlen = 40
			}
			f := connFlow(client, vipAP)
			f.VLAN = c.vlan
			f.DF = c.fam.vip.Is4() && !c.noDF
			f.TTL = 50
			f.Payload = make([]byte, mtu-c.overhead+1-hlen-20)
			for i := range f.Payload {
				f.Payload[i] = byte(i)
			}
			in := pkttest.TCP(f, pkttest.ACK|pkttest.PSH)
			ip := append([]byte(nil), pkttest.IPPacket(in)...)
			if len(ip) != mtu-c.overhead+1 {
				t.Fatalf("test packet is %d bytes, want %d", len(ip), mtu-c.overhead+1)
			}

			res, d := connRun(t, l, in)
			if c.noDF {
				if res.Verdict != pkttest.XDPDrop {
					t.Errorf("verdict %v, want %v", res.Verdict, pkttest.XDPDrop)
				}
				connCheckDeltas(t, "counters", d, connStatsOf("drop", "drop_too_big", "conn_miss", "conn_miss_non_syn"))
				return
			}
			if res.Verdict != pkttest.XDPTX {
				t.Fatalf("verdict %v, want %v", res.Verdict, pkttest.XDPTX)
			}
			connCheckDeltas(t, "counters", d, connStatsOf("tx", "ptb_sent", "conn_miss", "conn_miss_non_syn"))

			// The message goes back to the client from the VIP, out of
			// the port it came in (MACs swapped), and advertises the
			// largest inner packet that fits the tunnel.
			back := pkttest.Flow{
				SrcMAC: nodeMAC, DstMAC: clientMAC, VLAN: c.vlan,
				Src: netip.AddrPortFrom(v.Addr, 0), Dst: netip.AddrPortFrom(client.Addr(), 0),
			}
			advertised := uint32(mtu - c.overhead)
			var want []byte
			if c.fam.vip.Is4() {
				want = icmpError(t, back, layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded, advertised, ip[:28])
			} else {
				want = icmpError(t, back, layers.ICMPv6TypePacketTooBig, 0, advertised, ip[:48])
			}
			pkttest.Expect(t, want, res.Out)
			pkttest.VerifyChecksums(t, res.Packet)
		})
	}
}
