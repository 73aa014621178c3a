package connlimit

import (
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/sluice-dp/sluice/dataplane/police"
	"github.com/sluice-dp/sluice/internal/pkttest"
)

// Ports of the packet tests: one limited with each action, one not.
const (
	dropPort = 80
	rstPort  = 443
	freePort = 8443
)

var (
	client4 = netip.MustParseAddr("198.51.100.7")
	local4  = netip.MustParseAddr("192.0.2.10")
	client6 = netip.MustParseAddr("2001:db8:c::7")
	local6  = netip.MustParseAddr("2001:db8:5::10")
	// The LB node's outer addresses, for encapsulated SYNs.
	lb4 = netip.MustParseAddr("10.0.0.2")
	be4 = netip.MustParseAddr("10.1.0.5")
	lb6 = netip.MustParseAddr("fd00::2")
	be6 = netip.MustParseAddr("fd00:1::5")
)

func flow(src, dst netip.Addr, dport uint16) pkttest.Flow {
	return pkttest.Flow{
		Src: netip.AddrPortFrom(src, 40000),
		Dst: netip.AddrPortFrom(dst, dport),
		DF:  true,
		TTL: 57,
		TOS: 0x28,
	}
}

// rstFor builds, with gopacket, the RST|ACK the program must answer a SYN
// of f with (seq 1, no payload, as pkttest.TCP builds it): from the SYN's
// destination to its source, MACs swapped, seq 0, ack 2, window 0, TTL 64,
// IPv4 id 0 without DF, traffic class 0, no options.
func rstFor(t *testing.T, f pkttest.Flow) []byte {
	t.Helper()
	r := pkttest.Flow{SrcMAC: pkttest.DefaultDstMAC, DstMAC: pkttest.DefaultSrcMAC, VLAN: f.VLAN, Src: f.Dst, Dst: f.Src}
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(f.Dst.Port()),
		DstPort: layers.TCPPort(f.Src.Port()),
		Seq:     0,
		Ack:     2,
		RST:     true,
		ACK:     true,
		Window:  0,
	}
	return pkttest.Serialize(t, append(r.Headers(layers.IPProtocolTCP), tcp)...)
}

type xdpCase struct {
	name  string
	count int64 // the count of the packet's port, written into the map
	in    []byte
	// want is the verdict; for XDP_TX, out is the expected frame, and
	// for XDP_PASS the input must come out unchanged.
	want   pkttest.Verdict
	out    func(t *testing.T) []byte
	deltas map[string]uint64
}

func TestXDP(t *testing.T) {
	syn4 := flow(client4, local4, rstPort)
	syn6 := flow(client6, local6, rstPort)
	vlan4 := syn4
	vlan4.VLAN = 42
	passed := map[string]uint64{"pass": 1}
	admitted := map[string]uint64{"pass": 1, "syn_admitted": 1}
	dropped := map[string]uint64{"drop_limit": 1}
	reset := map[string]uint64{"tx_rst": 1}

	cases := []xdpCase{
		{name: "below limit", count: 1, in: pkttest.TCP(flow(client4, local4, dropPort), pkttest.SYN), want: pkttest.XDPPass, deltas: admitted},
		{name: "below limit ipv6", count: 1, in: pkttest.TCP(syn6, pkttest.SYN), want: pkttest.XDPPass, deltas: admitted},
		{name: "at limit drop", count: 2, in: pkttest.TCP(flow(client4, local4, dropPort), pkttest.SYN), want: pkttest.XDPDrop, deltas: dropped},
		{name: "at limit drop ipv6", count: 2, in: pkttest.TCP(flow(client6, local6, dropPort), pkttest.SYN), want: pkttest.XDPDrop, deltas: dropped},
		{name: "over limit drop", count: 5, in: pkttest.TCP(flow(client4, local4, dropPort), pkttest.SYN), want: pkttest.XDPDrop, deltas: dropped},
		{
			name: "at limit rst", count: 2, in: pkttest.TCP(syn4, pkttest.SYN), want: pkttest.XDPTX,
			out: func(t *testing.T) []byte { return rstFor(t, syn4) }, deltas: reset,
		},
		{
			name: "at limit rst ipv6", count: 2, in: pkttest.TCP(syn6, pkttest.SYN), want: pkttest.XDPTX,
			out: func(t *testing.T) []byte { return rstFor(t, syn6) }, deltas: reset,
		},
		{
			name: "at limit rst vlan", count: 2, in: pkttest.TCP(vlan4, pkttest.SYN), want: pkttest.XDPTX,
			out: func(t *testing.T) []byte { return rstFor(t, vlan4) }, deltas: reset,
		},
		{
			name: "at limit rst syn with payload", count: 2, in: synWithPayload(t, syn4), want: pkttest.XDPTX,
			// ack = seq 1 + SYN + 5 bytes of data
			out: func(t *testing.T) []byte { return withAck(t, rstFor(t, syn4), 7) }, deltas: reset,
		},
		{name: "ack at limit", count: 2, in: pkttest.TCP(syn4, pkttest.ACK), want: pkttest.XDPPass, deltas: passed},
		{name: "syn-ack at limit", count: 2, in: pkttest.TCP(syn4, pkttest.SYN|pkttest.ACK), want: pkttest.XDPPass, deltas: passed},
		{name: "syn-rst at limit", count: 2, in: pkttest.TCP(syn4, pkttest.SYN|pkttest.RST), want: pkttest.XDPPass, deltas: passed},
		{name: "fin at limit", count: 2, in: pkttest.TCP(syn6, pkttest.FIN|pkttest.ACK), want: pkttest.XDPPass, deltas: passed},
		{name: "unlimited port", count: 9, in: pkttest.TCP(flow(client4, local4, freePort), pkttest.SYN), want: pkttest.XDPPass, deltas: passed},
		{name: "udp to a limited port", count: 2, in: pkttest.UDP(flow(client4, local4, dropPort)), want: pkttest.XDPPass, deltas: passed},
		{
			name: "icmp", count: 2, in: pkttest.ICMPEcho(flow(client4, local4, dropPort), 1, 1), want: pkttest.XDPPass,
			deltas: map[string]uint64{"pass": 1, "pass_unparsed": 1},
		},
		{
			name: "truncated tcp", count: 2, in: pkttest.TCP(syn4, pkttest.SYN)[:14+20+10], want: pkttest.XDPPass,
			deltas: map[string]uint64{"pass": 1, "pass_unparsed": 1},
		},
		// On a backend host the LB's SYN arrives encapsulated.
		{
			name: "gue at limit drop", count: 2, want: pkttest.XDPDrop, deltas: dropped,
			in: pkttest.GUE(pkttest.Flow{Src: netip.AddrPortFrom(lb4, 50000), Dst: netip.AddrPortFrom(be4, 0)},
				pkttest.IPPacket(pkttest.TCP(flow(client4, local4, dropPort), pkttest.SYN))),
		},
		{
			name: "gue below limit", count: 1, want: pkttest.XDPPass, deltas: admitted,
			in: pkttest.GUE(pkttest.Flow{Src: netip.AddrPortFrom(lb6, 50000), Dst: netip.AddrPortFrom(be6, 0)},
				pkttest.IPPacket(pkttest.TCP(flow(client6, local6, dropPort), pkttest.SYN))),
		},
		{
			name: "gue ipv6 at limit rst", count: 2, want: pkttest.XDPTX, deltas: reset,
			in: pkttest.GUE(pkttest.Flow{Src: netip.AddrPortFrom(lb6, 50000), Dst: netip.AddrPortFrom(be6, 0)},
				pkttest.IPPacket(pkttest.TCP(syn6, pkttest.SYN))),
			// The encapsulation is removed: the RST goes from the VIP
			// straight to the client.
			out: func(t *testing.T) []byte { return rstFor(t, syn6) },
		},
		{
			name: "ipip at limit drop", count: 2, want: pkttest.XDPDrop, deltas: dropped,
			in: pkttest.IPIP(pkttest.Flow{Src: netip.AddrPortFrom(netip.MustParseAddr("172.16.1.2"), 0), Dst: netip.AddrPortFrom(be4, 0)},
				pkttest.IPPacket(pkttest.TCP(flow(client4, local4, dropPort), pkttest.SYN))),
		},
		{
			name: "ipv4 in ipv6 at limit rst", count: 2, want: pkttest.XDPTX, deltas: reset,
			in: pkttest.IPIP(pkttest.Flow{Src: netip.AddrPortFrom(lb6, 0), Dst: netip.AddrPortFrom(be6, 0)},
				pkttest.IPPacket(pkttest.TCP(syn4, pkttest.SYN))),
			out: func(t *testing.T) []byte { return rstFor(t, syn4) },
		},
	}
	l := load(t, Options{})
	if err := l.SetPorts(map[uint16]Limit{dropPort: {Max: 2, Action: police.Drop}, rstPort: {Max: 2, Action: police.RST}}); err != nil {
		t.Fatal(err)
	}
	// The program looks ACKs up among the sockets of the namespace it
	// runs in: an empty one, so that no socket of the host matches.
	ns := newNS(t)
	tp := &topo{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, p := range []uint16{dropPort, rstPort} {
				if err := l.objs.Counts.Put(p, c.count); err != nil {
					t.Fatal(err)
				}
			}
			before, err := l.Counters()
			if err != nil {
				t.Fatal(err)
			}
			var res pkttest.Result
			tp.in(t, ns, func() { res = pkttest.Run(t, l.Program(), c.in) })
			if res.Verdict != c.want {
				t.Fatalf("verdict %v, want %v", res.Verdict, c.want)
			}
			switch c.want {
			case pkttest.XDPTX:
				pkttest.Expect(t, c.out(t), res.Out)
				pkttest.VerifyChecksums(t, res.Packet)
			case pkttest.XDPPass:
				pkttest.Expect(t, c.in, res.Out)
			}
			after, err := l.Counters()
			if err != nil {
				t.Fatal(err)
			}
			pkttest.ExpectDeltas(t, before, after, c.deltas)
		})
	}
}

func synWithPayload(t *testing.T, f pkttest.Flow) []byte {
	f.Payload = []byte("hello")
	return pkttest.TCP(f, pkttest.SYN)
}

// withAck returns frame, a TCP frame, decoded and serialized again with a
// different acknowledgement number, checksums recomputed by gopacket.
func withAck(t *testing.T, frame []byte, ack uint32) []byte {
	t.Helper()
	p := pkttest.Decode(frame)
	var ls []gopacket.SerializableLayer
	for _, l := range p.Layers() {
		if tcp, ok := l.(*layers.TCP); ok {
			tcp.Ack = ack
		}
		if s, ok := l.(gopacket.SerializableLayer); ok {
			ls = append(ls, s)
		}
	}
	return pkttest.Serialize(t, ls...)
}
