package ratelimit

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/internal/pkttest"
)

// Only a SYN without ACK (or RST) is a new connection: everything else of
// an existing connection passes uncounted, even while the limit refuses
// every SYN.
func TestNotNewConnectionsPass(t *testing.T) {
	all := Match{Proto: l4.TCP}
	l := newLimiter(t, Rule{Match: all, Rate: 1, Window: time.Minute})
	exhausted(t, l, all)
	for _, c := range []struct {
		name  string
		flags pkttest.TCPFlags
	}{
		{"syn-ack", pkttest.SYN | pkttest.ACK},
		{"ack", pkttest.ACK},
		{"psh-ack", pkttest.PSH | pkttest.ACK},
		{"rst", pkttest.RST},
		{"rst-ack", pkttest.RST | pkttest.ACK},
		{"fin-ack", pkttest.FIN | pkttest.ACK},
		{"syn-rst", pkttest.SYN | pkttest.RST},
		{"no flags", 0},
	} {
		for _, fl := range []pkttest.Flow{
			{Src: client4, Dst: netip.AddrPortFrom(vip4, 80)},
			{Src: client6, Dst: netip.AddrPortFrom(vip6, 80)},
		} {
			t.Run(c.name+" "+fl.Src.Addr().String(), func(t *testing.T) {
				in := pkttest.TCP(fl, c.flags)
				before := counters(t, l)
				res := run(t, l, in, pkttest.XDPPass)
				pkttest.Expect(t, in, res.Out)
				after := counters(t, l)
				pkttest.ExpectDeltas(t, before.Stats, after.Stats,
					map[string]uint64{"packets": 1, "pass": 1, "pass_not_new": 1})
				if after.Rules[all] != before.Rules[all] {
					t.Errorf("rule counters moved: %+v -> %+v", before.Rules[all], after.Rules[all])
				}
			})
		}
	}
	// The same limit does refuse SYNs, IPv4 and IPv6 alike.
	run(t, l, syn(client4, netip.AddrPortFrom(vip4, 80)), pkttest.XDPDrop)
	run(t, l, syn(client6, netip.AddrPortFrom(vip6, 80)), pkttest.XDPDrop)
}

// UDP is counted only where a UDP rule asks for it, in packets per second.
func TestUDPCounting(t *testing.T) {
	dns := netip.AddrPortFrom(vip4, 53)
	udp := pkttest.UDP(pkttest.Flow{Src: client4, Dst: dns, Payload: []byte("query")})

	t.Run("off without a udp rule", func(t *testing.T) {
		l := newLimiter(t, Rule{Match: Match{Proto: l4.TCP}, Rate: 1, Window: time.Minute})
		for range 100 {
			before := counters(t, l)
			run(t, l, udp, pkttest.XDPPass)
			pkttest.ExpectDeltas(t, before.Stats, counters(t, l).Stats,
				map[string]uint64{"packets": 1, "pass": 1, "pass_udp_off": 1})
		}
	})
	t.Run("per source packets per second", func(t *testing.T) {
		m := Match{Port: 53, Proto: l4.UDP}
		l := newLimiter(t, Rule{Match: m, SourceRate: 1, Window: time.Minute})
		admitted := 0
		for range 70 {
			switch pkttest.Run(t, l.Program(), udp).Verdict {
			case pkttest.XDPPass:
				admitted++
			case pkttest.XDPDrop:
			default:
				t.Fatalf("verdict neither pass nor drop")
			}
		}
		if admitted != 60 {
			t.Errorf("%d of 70 packets admitted, want 60", admitted)
		}
		other := pkttest.UDP(pkttest.Flow{Src: netip.MustParseAddrPort("203.0.113.9:53000"), Dst: dns})
		run(t, l, other, pkttest.XDPPass)
		want := RuleCounters{
			Rule:   Scope{Seen: 71, Admitted: 61, Refused: 10},
			Source: Scope{Seen: 71, Admitted: 61, Refused: 10},
		}
		if got := counters(t, l).Rules[m]; got != want {
			t.Errorf("counters %+v, want %+v", got, want)
		}
	})
}

// Packets the parser cannot attribute to a flow pass, each with its reason.
func TestMalformedPass(t *testing.T) {
	dst := netip.AddrPortFrom(vip4, 80)
	v4syn := syn(client4, dst)
	mutate := func(b []byte, f func([]byte)) []byte {
		c := append([]byte(nil), b...)
		f(c)
		return c
	}
	const ip4 = 14 // offset of the IPv4 header in an untagged frame
	cases := []struct {
		name   string
		frame  []byte
		reason string
	}{
		{"ethernet header only", v4syn[:14], "pass_truncated"},
		{"vlan tag cut", pkttest.TCP(pkttest.Flow{VLAN: 5, Src: client4, Dst: dst}, pkttest.SYN)[:16], "pass_truncated"},
		{"arp", pkttest.Serialize(t, &layers.Ethernet{SrcMAC: peerMAC, DstMAC: ourMAC, EthernetType: layers.EthernetTypeARP},
			&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6,
				ProtAddressSize: 4, Operation: 1, SourceHwAddress: peerMAC, SourceProtAddress: []byte{198, 51, 100, 7},
				DstHwAddress: make([]byte, 6), DstProtAddress: []byte{192, 0, 2, 10}}), "pass_not_ip"},
		{"two vlan tags", pkttest.Serialize(t,
			&layers.Ethernet{SrcMAC: peerMAC, DstMAC: ourMAC, EthernetType: layers.EthernetTypeQinQ},
			&layers.Dot1Q{VLANIdentifier: 1, Type: layers.EthernetTypeDot1Q},
			&layers.Dot1Q{VLANIdentifier: 2, Type: layers.EthernetTypeIPv4},
			gopacket.Payload(pkttest.IPPacket(v4syn))), "pass_not_ip"},
		{"icmp echo", pkttest.ICMPEcho(pkttest.Flow{Src: client4, Dst: dst}, 1, 1), "pass_not_tcp_udp"},
		{"ipv6 hop-by-hop header", ipv6WithHopByHop(t), "pass_not_tcp_udp"},
		{"ipv4 header cut", v4syn[:ip4+12], "pass_truncated"},
		{"ipv4 length beyond frame", mutate(v4syn, func(b []byte) { binary.BigEndian.PutUint16(b[ip4+2:], 200) }), "pass_truncated"},
		{"ipv4 ihl 4", mutate(v4syn, func(b []byte) { b[ip4] = 0x44 }), "pass_bad_header"},
		{"ipv4 version 5", mutate(v4syn, func(b []byte) { b[ip4] = 0x55 }), "pass_bad_header"},
		{"tcp header cut", mutate(v4syn[:ip4+20+12], func(b []byte) { binary.BigEndian.PutUint16(b[ip4+2:], 32) }), "pass_truncated"},
		{"tcp data offset 4", mutate(v4syn, func(b []byte) { b[ip4+20+12] = 0x40 }), "pass_bad_header"},
		{"tcp data offset beyond packet", mutate(v4syn, func(b []byte) { b[ip4+20+12] = 0xf0 }), "pass_bad_header"},
		{"non-first ipv4 fragment", mutate(v4syn, func(b []byte) { binary.BigEndian.PutUint16(b[ip4+6:], 185) }), "pass_fragment"},
		{"ipv6 fragment header", ipv6Fragment(t), "pass_fragment"},
		{"udp length beyond packet", mutate(pkttest.UDP(pkttest.Flow{Src: client4, Dst: dst}),
			func(b []byte) { binary.BigEndian.PutUint16(b[ip4+20+4:], 100) }), "pass_bad_header"},
		{"gue inner not ip", pkttest.UDP(pkttest.Flow{Src: netip.MustParseAddrPort("10.0.0.2:49200"),
			Dst: netip.MustParseAddrPort("10.1.0.5:6080"), Payload: []byte{0x50, 0, 0, 20, 0, 0, 0, 0}}), "pass_not_tcp_udp"},
		{"gue inner cut", pkttest.UDP(pkttest.Flow{Src: netip.MustParseAddrPort("10.0.0.2:49200"),
			Dst: netip.MustParseAddrPort("10.1.0.5:6080"), Payload: pkttest.IPPacket(v4syn)[:30]}), "pass_truncated"},
		{"gue control message", pkttest.UDP(pkttest.Flow{Src: netip.MustParseAddrPort("10.0.0.2:49200"),
			Dst: netip.MustParseAddrPort("10.1.0.5:6080"), Payload: []byte{0x20, 0, 0, 0}}), "pass_not_tcp_udp"},
	}
	l := newLimiter(t, Rule{Match: Match{Proto: l4.TCP}, Rate: 1, Window: time.Minute},
		Rule{Match: Match{Proto: l4.UDP}, Rate: 1, Window: time.Minute})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := counters(t, l)
			res := run(t, l, c.frame, pkttest.XDPPass)
			if string(res.Out) != string(c.frame) {
				t.Errorf("passed frame was changed")
			}
			pkttest.ExpectDeltas(t, before.Stats, counters(t, l).Stats,
				map[string]uint64{"packets": 1, "pass": 1, c.reason: 1})
		})
	}
}

func ipv6WithHopByHop(t *testing.T) []byte {
	hs := pkttest.Flow{Src: client6, Dst: netip.AddrPortFrom(vip6, 80)}.Headers(layers.IPProtocolIPv6HopByHop)
	hbh := &layers.IPv6HopByHop{}
	hbh.NextHeader = layers.IPProtocolTCP
	hbh.Options = []*layers.IPv6HopByHopOption{{OptionType: 1, OptionLength: 4, OptionData: make([]byte, 4)}}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 80, SYN: true, Seq: 1}
	return pkttest.Serialize(t, append(hs, hbh, tcp)...)
}

func ipv6Fragment(t *testing.T) []byte {
	hs := pkttest.Flow{Src: client6, Dst: netip.AddrPortFrom(vip6, 80)}.Headers(layers.IPProtocolIPv6Fragment)
	frag := &layers.IPv6Fragment{NextHeader: layers.IPProtocolTCP, FragmentOffset: 0, MoreFragments: true, Identification: 7}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 80, SYN: true, Seq: 1}
	return pkttest.Serialize(t, append(hs, frag, tcp)...)
}
