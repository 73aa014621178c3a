package lb

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/internal/pkttest"
	"github.com/sluice-dp/sluice/internal/testenv"
)

// Addresses of the malformed-input tests. The VIP addresses carry a TCP VIP
// on port 80 and a UDP VIP on port 7777; malOther4/6 are plain addresses the
// LB knows nothing about.
var (
	malVIP4     = netip.MustParseAddr("192.0.2.10")
	malVIP6     = netip.MustParseAddr("2001:db8::10")
	malOther4   = netip.MustParseAddr("192.0.2.99")
	malOther6   = netip.MustParseAddr("2001:db8::99")
	malClient4  = netip.MustParseAddr("198.51.100.7")
	malClient6  = netip.MustParseAddr("2001:db8:c::7")
	malBackend4 = netip.MustParseAddr("10.1.0.5")
	malBackend6 = netip.MustParseAddr("fd00:1::5")
	// malEmpty4 holds the VIP of the no-backend cases.
	malEmpty4 = netip.MustParseAddr("192.0.2.20")
)

const (
	malTCPPort = 80
	malUDPPort = 7777
	// malClientPort is the client's source port in every crafted flow.
	malClientPort = 40000
)

// malSetup installs the VIPs every case shares, one backend each, so that
// the chosen backend of a balanced case is known without consulting Maglev.
func malSetup(t *testing.T, l *LB) {
	t.Helper()
	addVIP(t, l, VIP{Addr: malVIP4, Port: malTCPPort, Proto: l4.TCP}, VIPOptions{}, Backend{Addr: malBackend4, Weight: 1})
	addVIP(t, l, VIP{Addr: malVIP4, Port: malUDPPort, Proto: l4.UDP}, VIPOptions{}, Backend{Addr: malBackend4, Weight: 1})
	addVIP(t, l, VIP{Addr: malVIP6, Port: malTCPPort, Proto: l4.TCP}, VIPOptions{}, Backend{Addr: malBackend6, Weight: 1})
	addVIP(t, l, VIP{Addr: malVIP6, Port: malUDPPort, Proto: l4.UDP}, VIPOptions{}, Backend{Addr: malBackend6, Weight: 1})
}

// malFlow is a client flow toward dst, from clientMAC to the LB node's MAC;
// opts adjust it (DF, payload, VLAN, ...).
func malFlow(dst netip.Addr, dport uint16, opts ...func(*pkttest.Flow)) pkttest.Flow {
	src := malClient4
	if dst.Is6() {
		src = malClient6
	}
	f := pkttest.Flow{
		SrcMAC: clientMAC,
		DstMAC: nodeMAC,
		Src:    netip.AddrPortFrom(src, malClientPort),
		Dst:    netip.AddrPortFrom(dst, dport),
	}
	for _, o := range opts {
		o(&f)
	}
	return f
}

func malDF(f *pkttest.Flow) { f.DF = true }

func malPayload(n int) func(*pkttest.Flow) {
	return func(f *pkttest.Flow) {
		f.Payload = make([]byte, n)
		for i := range f.Payload {
			f.Payload[i] = byte(i*7 + 3)
		}
	}
}

func malVLAN(id uint16) func(*pkttest.Flow) {
	return func(f *pkttest.Flow) { f.VLAN = id }
}

// malL3 is the offset of the IP header in a frame: after the Ethernet header
// and however many 802.1Q/802.1ad tags precede the EtherType.
func malL3(frame []byte) int {
	off := 12
	for {
		switch binary.BigEndian.Uint16(frame[off:]) {
		case 0x8100, 0x88a8:
			off += 4
		default:
			return off + 2
		}
	}
}

// malEdit returns a copy of frame whose IP packet (IP header onwards) edit
// has changed. An IPv4 header checksum is recomputed afterwards, so that
// the only thing wrong with the result is what edit broke on purpose.
func malEdit(frame []byte, edit func(ip []byte)) []byte {
	b := slices.Clone(frame)
	ip := b[malL3(b):]
	edit(ip)
	if len(ip) >= 20 && ip[0]>>4 == 4 {
		n := min(max(int(ip[0]&0xf)*4, 20), len(ip))
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:], pkttest.Checksum(ip[:n]))
	}
	return b
}

// malCut returns the first n bytes of frame, leaving every length field as
// it was.
func malCut(frame []byte, n int) []byte { return slices.Clone(frame[:n]) }

// malCutIP cuts frame to n bytes and sets the IP length fields to match,
// so that the IP header is consistent and the cut shows only inside the
// transport header.
func malCutIP(frame []byte, n int) []byte {
	b := malCut(frame, n)
	return malEdit(b, func(ip []byte) {
		if ip[0]>>4 == 4 {
			binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
		} else {
			binary.BigEndian.PutUint16(ip[4:], uint16(len(ip)-40))
		}
	})
}

func malSetU16(off int, v uint16) func(ip []byte) {
	return func(ip []byte) { binary.BigEndian.PutUint16(ip[off:], v) }
}

// malOpts4 inserts IPv4 options after the fixed header of frame.
func malOpts4(frame []byte, opts []byte) []byte {
	l3 := malL3(frame)
	b := slices.Concat(frame[:l3+20], opts, frame[l3+20:])
	return malEdit(b, func(ip []byte) {
		ip[0] = 0x40 | byte((20+len(opts))/4)
		binary.BigEndian.PutUint16(ip[2:], binary.BigEndian.Uint16(ip[2:])+uint16(len(opts)))
	})
}

// malExt6 inserts one IPv6 extension header of type nh after the IPv6
// header of frame; its own next-header byte takes over the old value.
func malExt6(frame []byte, nh byte, ext []byte) []byte {
	l3 := malL3(frame)
	ext = slices.Clone(ext)
	b := slices.Concat(frame[:l3+40], ext, frame[l3+40:])
	ip := b[l3:]
	ext = ip[40 : 40+len(ext)]
	ext[0] = ip[6]
	ip[6] = nh
	binary.BigEndian.PutUint16(ip[4:], binary.BigEndian.Uint16(ip[4:])+uint16(len(ext)))
	return b
}

// Extension headers of 8 bytes: the first byte is overwritten by malExt6.
var (
	malHopByHop = []byte{0, 0, 1, 4, 0, 0, 0, 0}     // PadN over the 6 option bytes
	malDestOpts = []byte{0, 0, 1, 4, 0, 0, 0, 0}     // same layout, other type
	malRouting  = []byte{0, 0, 253, 0, 0, 0, 0, 0}   // experimental type, no segments left
	malFragHdr  = []byte{0, 0, 0, 1, 0, 0, 0x12, 34} // offset 0, M set
)

// malTPID replaces the outermost tag's TPID of a tagged frame.
func malTPID(frame []byte, tpid uint16) []byte {
	b := slices.Clone(frame)
	binary.BigEndian.PutUint16(b[12:], tpid)
	return b
}

// malPushTag adds an outer VLAN tag (tpid, vid) in front of frame's
// EtherType or existing tags.
func malPushTag(frame []byte, tpid, vid uint16) []byte {
	tag := binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, tpid), vid)
	return slices.Concat(frame[:12], tag, frame[12:])
}

// malGUE is the frame the LB must emit for in (a frame of flow f) toward
// backend: GUE from the node's address, the source port and flow label
// derived from the 5-tuple hash, and the whole input IP packet inside.
func malGUE(f pkttest.Flow, in []byte, backend netip.Addr) []byte {
	h := modelFlowHash(f.Src, f.Dst, testConfig().Seed)
	src := nodeV4
	if backend.Is6() {
		src = nodeV6
	}
	outer := pkttest.Flow{
		SrcMAC: f.DstMAC,
		DstMAC: gatewayMAC,
		VLAN:   f.VLAN,
		Src:    netip.AddrPortFrom(src, uint16(49152+h&0x3fff)),
		Dst:    netip.AddrPortFrom(backend, pkttest.DefaultGUEPort),
		TOS:    f.TOS,
		DF:     f.DF || f.Dst.Addr().Is6(),
	}
	if backend.Is6() {
		outer.FlowLabel = h & 0xfffff
	}
	return pkttest.GUE(outer, pkttest.IPPacket(in))
}

// malTooBig is the ICMP "fragmentation needed" (IPv4) or "packet too big"
// (IPv6) the LB must send back for in, a frame of flow f: from the VIP to
// the client, MACs swapped, advertising mtu, quoting the IP header and the
// first 8 bytes after it (for IPv6, the fixed 40-byte header).
func malTooBig(t *testing.T, f pkttest.Flow, in []byte, mtu uint32) []byte {
	t.Helper()
	ip := pkttest.IPPacket(in)
	back := pkttest.Flow{
		SrcMAC: f.DstMAC,
		DstMAC: f.SrcMAC,
		VLAN:   f.VLAN,
		Src:    netip.AddrPortFrom(f.Dst.Addr(), 0),
		Dst:    netip.AddrPortFrom(f.Src.Addr(), 0),
	}
	if f.Dst.Addr().Is4() {
		quote := ip[:int(ip[0]&0xf)*4+8]
		return pkttest.Serialize(t, append(back.Headers(layers.IPProtocolICMPv4),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable,
				layers.ICMPv4CodeFragmentationNeeded), Seq: uint16(mtu)},
			gopacket.Payload(quote))...)
	}
	body := binary.BigEndian.AppendUint32(nil, mtu)
	body = append(body, ip[:48]...)
	return pkttest.Serialize(t, append(back.Headers(layers.IPProtocolICMPv6),
		&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypePacketTooBig, 0)},
		gopacket.Payload(body))...)
}

// Counter expectations: every counter a case names must move by exactly
// that much, and every other counter must not move at all.
func malPass(reason string) map[string]uint64 {
	return map[string]uint64{"pass": 1, reason: 1}
}

func malDrop(reason string, events ...string) map[string]uint64 {
	m := map[string]uint64{"drop": 1, reason: 1}
	for _, e := range events {
		m[e]++
	}
	return m
}

func malTX(events ...string) map[string]uint64 {
	m := map[string]uint64{"tx": 1}
	for _, e := range events {
		m[e]++
	}
	return m
}

// A new flow: a TCP SYN skips the connection table lookup, anything else
// looks it up and misses.
var (
	malSynMiss = []string{"conn_miss", "conn_miss_syn"}
	malAckMiss = []string{"conn_miss", "conn_miss_non_syn"}
)

type malCase struct {
	name string
	in   []byte
	// setup replaces malSetup when set.
	setup   func(t *testing.T, l *LB)
	verdict pkttest.Verdict
	stats   map[string]uint64
	// want is the expected output of an XDP_TX case. A PASS case must come
	// out byte-identical to its input; a DROP case's output is not looked at.
	want []byte
}

// runMalCases runs the cases on one program loaded with malSetup, emptying
// the connection tables before each case so that every case's flow is new
// whatever ran before it. A case with its own setup gets its own program.
func runMalCases(t *testing.T, cases []malCase) {
	t.Helper()
	var shared *LB
	if slices.ContainsFunc(cases, func(c malCase) bool { return c.setup == nil }) {
		shared = newLB(t, Options{RingSize: 251})
		malSetup(t, shared)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Setup may create connection-table entries, which the packet
			// must find on the same CPU.
			testenv.LockAnyCPU(t)
			l := shared
			if c.setup != nil {
				l = newLB(t, Options{RingSize: 251})
				c.setup(t, l)
			} else {
				malFlushConns(t, l)
			}
			before := readCounters(t, l)
			res := pkttest.Run(t, l.Program(), c.in)
			after := readCounters(t, l)

			if res.Verdict != c.verdict {
				t.Errorf("verdict %v, want %v", res.Verdict, c.verdict)
			}
			checkStats(t, before, after, c.stats)
			malCheckVIPTraffic(t, before, after, c)
			switch c.verdict {
			case pkttest.XDPPass:
				pkttest.Expect(t, c.in, res.Out)
			case pkttest.XDPTX:
				if c.want == nil {
					t.Fatal("bad case: XDP_TX without an expected frame")
				}
				pkttest.Expect(t, c.want, res.Out)
				pkttest.VerifyChecksums(t, res.Packet)
			}
		})
	}
}

// malFlushConns empties every CPU's connection table. The LB keeps its maps
// private; the test reaches each inner table through the outer array.
func malFlushConns(t testing.TB, l *LB) {
	t.Helper()
	for cpu := range possibleCPUs() {
		var id uint32
		if err := l.objs.Conns.Lookup(uint32(cpu), &id); err != nil {
			t.Fatalf("look up connection table of cpu %d: %v", cpu, err)
		}
		m, err := ebpf.NewMapFromID(ebpf.MapID(id))
		if err != nil {
			t.Fatalf("open connection table of cpu %d: %v", cpu, err)
		}
		var keys []lbFlowKey
		var k lbFlowKey
		var v lbFlowState
		it := m.Iterate()
		for it.Next(&k, &v) {
			keys = append(keys, k)
		}
		err = it.Err()
		for _, k := range keys {
			if err == nil {
				err = m.Delete(k)
			}
		}
		m.Close()
		if err != nil {
			t.Fatalf("empty connection table of cpu %d: %v", cpu, err)
		}
	}
}

// malCheckVIPTraffic checks the per-VIP traffic counters: only an
// encapsulated packet counts, with its IP length as received.
func malCheckVIPTraffic(t testing.TB, before, after Counters, c malCase) {
	t.Helper()
	var pkts, bytes uint64
	for v, a := range after.VIPs {
		pkts += a.Packets - before.VIPs[v].Packets
		bytes += a.Bytes - before.VIPs[v].Bytes
	}
	var wantPkts, wantBytes uint64
	if c.stats["encap_gue"]+c.stats["encap_ipip"] > 0 {
		wantPkts, wantBytes = 1, uint64(len(pkttest.IPPacket(c.in)))
	}
	if pkts != wantPkts || bytes != wantBytes {
		t.Errorf("vip traffic moved by %d packets %d bytes, want %d packets %d bytes", pkts, bytes, wantPkts, wantBytes)
	}
}

// TestMalformedNonVIP checks that traffic the LB does not balance reaches the
// stack untouched, with the reason it was passed.
func TestMalformedNonVIP(t *testing.T) {
	arp := pkttest.Serialize(t,
		&layers.Ethernet{SrcMAC: clientMAC, DstMAC: nodeMAC, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{
			AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
			HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPRequest,
			SourceHwAddress: clientMAC, SourceProtAddress: malClient4.AsSlice(),
			DstHwAddress: make([]byte, 6), DstProtAddress: malVIP4.AsSlice(),
		})
	// An 802.3 frame: bytes 12-13 are a length (< 0x600), an LLC header follows.
	llc := slices.Concat(nodeMAC, clientMAC, []byte{0, 6, 0x42, 0x42, 0x03, 0, 0, 0})
	gre := func(dst netip.Addr) []byte {
		return pkttest.Serialize(t, append(malFlow(dst, 0).Headers(layers.IPProtocolGRE),
			gopacket.Payload{0, 0, 0x08, 0x00})...)
	}
	// An ICMP message of the other family's protocol number: the program
	// must not read an ICMPv4 header in IPv6 or the reverse.
	wrongICMP := func(dst netip.Addr, proto layers.IPProtocol) []byte {
		return pkttest.Serialize(t, append(malFlow(dst, 0).Headers(proto),
			gopacket.Payload{8, 0, 0xf7, 0xff, 0, 0, 0, 0})...)
	}

	runMalCases(t, []malCase{
		{name: "ARP request for a VIP address passes as not IP", in: arp,
			verdict: pkttest.XDPPass, stats: malPass("pass_not_ip")},
		{name: "802.3 LLC frame passes as not IP", in: llc,
			verdict: pkttest.XDPPass, stats: malPass("pass_not_ip")},
		{name: "ARP in a single 802.1ad tag passes as not IP", in: malPushTag(arp, 0x88a8, 7),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_ip")},
		{name: "IPv4 TCP SYN to a non-VIP address", in: pkttest.TCP(malFlow(malOther4, malTCPPort), pkttest.SYN),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "IPv4 UDP to a non-VIP address", in: pkttest.UDP(malFlow(malOther4, malUDPPort, malPayload(20))),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "IPv6 TCP SYN to a non-VIP address", in: pkttest.TCP(malFlow(malOther6, malTCPPort), pkttest.SYN),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "IPv6 UDP to a non-VIP address", in: pkttest.UDP(malFlow(malOther6, malUDPPort, malPayload(20))),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "IPv4 TCP to a VIP address on a port that is not a VIP", in: pkttest.TCP(malFlow(malVIP4, 8080), pkttest.SYN),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "IPv6 UDP to a VIP address on a port that is not a VIP", in: pkttest.UDP(malFlow(malVIP6, 5353, malPayload(4))),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "IPv4 UDP to the port of a TCP-only VIP", in: pkttest.UDP(malFlow(malVIP4, malTCPPort, malPayload(4))),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "IPv4 ICMP echo to a non-VIP address is not answered", in: pkttest.ICMPEcho(malFlow(malOther4, 0), 7, 1),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "IPv6 ICMP echo to a non-VIP address is not answered", in: pkttest.ICMPEcho(malFlow(malOther6, 0), 7, 1),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "IPv4 GRE to a non-VIP address", in: gre(malOther4),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "IPv6 GRE to a non-VIP address", in: gre(malOther6),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "IPv4 GRE to a VIP address is dropped", in: gre(malVIP4),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_unknown_proto")},
		{name: "IPv6 GRE to a VIP address is dropped", in: gre(malVIP6),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_unknown_proto")},
		{name: "IPv4 carrying ICMPv6 to a VIP address is dropped", in: wrongICMP(malVIP4, layers.IPProtocolICMPv6),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_unknown_proto")},
		{name: "IPv6 carrying ICMPv4 to a VIP address is dropped", in: wrongICMP(malVIP6, layers.IPProtocolICMPv4),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_unknown_proto")},
		{name: "IPv6 carrying ICMPv4 to a non-VIP address", in: wrongICMP(malOther6, layers.IPProtocolICMPv4),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
	})
}

// TestMalformedTruncated cuts frames at each header boundary. While the
// destination address is unreadable the frame goes to the stack; once it is
// readable, a cut frame aimed at a VIP address is dropped.
func TestMalformedTruncated(t *testing.T) {
	syn4 := pkttest.TCP(malFlow(malVIP4, malTCPPort), pkttest.SYN)
	syn4other := pkttest.TCP(malFlow(malOther4, malTCPPort), pkttest.SYN)
	syn6 := pkttest.TCP(malFlow(malVIP6, malTCPPort), pkttest.SYN)
	syn6other := pkttest.TCP(malFlow(malOther6, malTCPPort), pkttest.SYN)
	udp4 := pkttest.UDP(malFlow(malVIP4, malUDPPort, malPayload(10)))
	udp6 := pkttest.UDP(malFlow(malVIP6, malUDPPort, malPayload(10)))
	ping4 := pkttest.ICMPEcho(malFlow(malVIP4, 0), 7, 1)
	ping4other := pkttest.ICMPEcho(malFlow(malOther4, 0), 7, 1)
	ping6 := pkttest.ICMPEcho(malFlow(malVIP6, 0), 7, 1)
	tagged4 := pkttest.TCP(malFlow(malVIP4, malTCPPort, malVLAN(100)), pkttest.SYN)

	runMalCases(t, []malCase{
		// BPF_PROG_RUN refuses frames under 14 bytes: see
		// TestMalformedShorterThanEthernet.
		{name: "Ethernet header alone with the IPv4 EtherType", in: malCut(syn4, 14),
			verdict: pkttest.XDPPass, stats: malPass("pass_short")},
		{name: "Ethernet header alone with the 802.1Q EtherType", in: malCut(tagged4, 14),
			verdict: pkttest.XDPPass, stats: malPass("pass_short")},
		{name: "cut inside the 802.1Q tag", in: malCut(tagged4, 17),
			verdict: pkttest.XDPPass, stats: malPass("pass_short")},
		{name: "cut right after the 802.1Q tag", in: malCut(tagged4, 18),
			verdict: pkttest.XDPPass, stats: malPass("pass_short")},
		{name: "IPv4 header cut after 19 bytes, VIP destination", in: malCut(syn4, 14+19),
			verdict: pkttest.XDPPass, stats: malPass("pass_short")},
		{name: "IPv4 header cut after 19 bytes, non-VIP destination", in: malCut(syn4other, 14+19),
			verdict: pkttest.XDPPass, stats: malPass("pass_short")},
		{name: "IPv4 header cut after a VLAN tag, VIP destination", in: malCut(tagged4, 18+12),
			verdict: pkttest.XDPPass, stats: malPass("pass_short")},
		{name: "IPv6 header cut after 39 bytes, VIP destination", in: malCut(syn6, 14+39),
			verdict: pkttest.XDPPass, stats: malPass("pass_short")},
		{name: "IPv6 header cut after 39 bytes, non-VIP destination", in: malCut(syn6other, 14+39),
			verdict: pkttest.XDPPass, stats: malPass("pass_short")},
		{name: "IPv4 total length beyond the frame, VIP", in: malCut(syn4, len(syn4)-1),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_truncated")},
		{name: "IPv4 total length beyond the frame, non-VIP", in: malCut(syn4other, len(syn4other)-1),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "IPv4 header complete, nothing after it, VIP", in: malCut(syn4, 14+20),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_truncated")},
		{name: "IPv6 payload length beyond the frame, VIP", in: malCut(syn6, len(syn6)-1),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_truncated")},
		{name: "IPv6 payload length beyond the frame, non-VIP", in: malCut(syn6other, len(syn6other)-1),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "IPv4 TCP header cut at 10 bytes, VIP", in: malCutIP(syn4, 14+20+10),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_truncated")},
		{name: "IPv4 TCP header cut at 10 bytes, non-VIP", in: malCutIP(syn4other, 14+20+10),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "IPv4 TCP header past the total length, held in Ethernet padding, VIP",
			in:      malEdit(syn4, malSetU16(2, 20+10)),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_truncated")},
		{name: "IPv6 TCP header cut at 10 bytes, VIP", in: malCutIP(syn6, 14+40+10),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_truncated")},
		{name: "IPv4 UDP header cut at 4 bytes, VIP", in: malCutIP(udp4, 14+20+4),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_truncated")},
		{name: "IPv6 UDP header cut at 4 bytes, VIP", in: malCutIP(udp6, 14+40+4),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_truncated")},
		{name: "IPv4 ICMP header cut at 4 bytes, VIP", in: malCutIP(ping4, 14+20+4),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_truncated")},
		{name: "IPv4 ICMP header cut at 4 bytes, non-VIP", in: malCutIP(ping4other, 14+20+4),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "IPv6 ICMPv6 header cut at 4 bytes, VIP", in: malCutIP(ping6, 14+40+4),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_truncated")},
	})
}

// TestMalformedShorterThanEthernet: the kernel's BPF_PROG_RUN refuses a
// frame shorter than an Ethernet header (ETH_HLEN) with EINVAL before the
// program runs, so the program's own "shorter than Ethernet" branch cannot be
// reached from here; a real NIC never delivers such a frame either. What can
// be checked is that the refusal is EINVAL and that nothing was counted.
func TestMalformedShorterThanEthernet(t *testing.T) {
	l := newLB(t, Options{RingSize: 251})
	malSetup(t, l)
	syn4 := pkttest.TCP(malFlow(malVIP4, malTCPPort), pkttest.SYN)
	before := readCounters(t, l)
	for n := range 14 {
		_, err := l.Program().Run(&ebpf.RunOptions{Data: malCut(syn4, n), DataOut: make([]byte, 4096)})
		if !errors.Is(err, unix.EINVAL) {
			t.Errorf("%d-byte frame: run error %v, want EINVAL", n, err)
		}
	}
	checkStats(t, before, readCounters(t, l), nil)
}

// TestMalformedHeaders covers header fields that lie: they are dropped when
// aimed at a VIP address and passed otherwise.
func TestMalformedHeaders(t *testing.T) {
	syn4 := pkttest.TCP(malFlow(malVIP4, malTCPPort), pkttest.SYN)
	syn4other := pkttest.TCP(malFlow(malOther4, malTCPPort), pkttest.SYN)
	syn6 := pkttest.TCP(malFlow(malVIP6, malTCPPort), pkttest.SYN)
	syn6other := pkttest.TCP(malFlow(malOther6, malTCPPort), pkttest.SYN)
	udp4 := pkttest.UDP(malFlow(malVIP4, malUDPPort, malPayload(10)))
	udp6 := pkttest.UDP(malFlow(malVIP6, malUDPPort, malPayload(10)))
	setByte := func(off int, v byte) func([]byte) { return func(ip []byte) { ip[off] = v } }

	runMalCases(t, []malCase{
		{name: "IPv4 IHL 4, VIP", in: malEdit(syn4, setByte(0, 0x44)),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_bad_header")},
		{name: "IPv4 IHL 4, non-VIP", in: malEdit(syn4other, setByte(0, 0x44)),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "IPv4 IHL 0, VIP", in: malEdit(syn4, setByte(0, 0x40)),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_bad_header")},
		{name: "IPv4 IHL 15 past the total length, VIP", in: malEdit(syn4, setByte(0, 0x4f)),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_bad_header")},
		{name: "IPv4 IHL 15 and total length 60 past the frame, VIP",
			in:      malEdit(syn4, func(ip []byte) { ip[0] = 0x4f; binary.BigEndian.PutUint16(ip[2:], 60) }),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_truncated")},
		{name: "IPv4 IHL 15 and total length 60 past the frame, non-VIP",
			in:      malEdit(syn4other, func(ip []byte) { ip[0] = 0x4f; binary.BigEndian.PutUint16(ip[2:], 60) }),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "IP version 6 under the IPv4 EtherType, VIP", in: malEdit(syn4, setByte(0, 0x65)),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_bad_header")},
		{name: "IP version 6 under the IPv4 EtherType, non-VIP", in: malEdit(syn4other, setByte(0, 0x65)),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "IP version 4 under the IPv6 EtherType, VIP", in: malEdit(syn6, setByte(0, 0x40)),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_bad_header")},
		{name: "IPv4 total length 19, below the header length, VIP", in: malEdit(syn4, malSetU16(2, 19)),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_bad_header")},
		{name: "IPv4 total length 0, VIP", in: malEdit(syn4, malSetU16(2, 0)),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_bad_header")},
		{name: "TCP data offset 4, VIP", in: malEdit(syn4, setByte(20+12, 4<<4)),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_bad_header")},
		{name: "TCP data offset 4, non-VIP", in: malEdit(syn4other, setByte(20+12, 4<<4)),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "TCP data offset 15 past the segment, VIP", in: malEdit(syn4, setByte(20+12, 15<<4)),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_bad_header")},
		{name: "IPv6 TCP data offset 6 past the segment, VIP", in: malEdit(syn6, setByte(40+12, 6<<4)),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_bad_header")},
		{name: "UDP length one more than the IP payload, VIP", in: malEdit(udp4, malSetU16(20+4, 8+10+1)),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_bad_header")},
		{name: "UDP length one less than the IP payload, VIP", in: malEdit(udp4, malSetU16(20+4, 8+10-1)),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_bad_header")},
		{name: "UDP length 0, VIP", in: malEdit(udp4, malSetU16(20+4, 0)),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_bad_header")},
		{name: "IPv6 UDP length one more than the payload, VIP", in: malEdit(udp6, malSetU16(40+4, 8+10+1)),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_bad_header")},
		{name: "IPv6 UDP length one less than the payload, VIP", in: malEdit(udp6, malSetU16(40+4, 8+10-1)),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_bad_header")},
		{name: "IPv6 payload length 0 (jumbogram), VIP", in: malEdit(syn6, malSetU16(4, 0)),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_bad_header")},
		{name: "IPv6 payload length 0 (jumbogram), non-VIP", in: malEdit(syn6other, malSetU16(4, 0)),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
	})
}

// TestMalformedFragmentsAndExtensions: the LB cannot see the ports of a
// fragment or parse past IPv6 extension headers, so it drops those aimed at
// a VIP address and passes the rest.
func TestMalformedFragmentsAndExtensions(t *testing.T) {
	udp4 := pkttest.UDP(malFlow(malVIP4, malUDPPort, malPayload(40)))
	udp4other := pkttest.UDP(malFlow(malOther4, malUDPPort, malPayload(40)))
	syn6 := pkttest.TCP(malFlow(malVIP6, malTCPPort), pkttest.SYN)
	syn6other := pkttest.TCP(malFlow(malOther6, malTCPPort), pkttest.SYN)
	// A later fragment: the bytes after the IP header are payload, not a
	// UDP header (offset 185 × 8 = 1480 bytes).
	const mf, laterFrag = 0x2000, 185

	runMalCases(t, []malCase{
		{name: "IPv4 first fragment (MF set), VIP", in: malEdit(udp4, malSetU16(6, mf)),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_fragment")},
		{name: "IPv4 later fragment (offset 1480, MF set), VIP", in: malEdit(udp4, malSetU16(6, mf|laterFrag)),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_fragment")},
		{name: "IPv4 last fragment (offset 1480, MF clear), VIP", in: malEdit(udp4, malSetU16(6, laterFrag)),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_fragment")},
		{name: "IPv4 first fragment with DF also set, VIP", in: malEdit(udp4, malSetU16(6, 0x4000|mf)),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_fragment")},
		{name: "IPv4 first fragment, non-VIP", in: malEdit(udp4other, malSetU16(6, mf)),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "IPv4 last fragment, non-VIP", in: malEdit(udp4other, malSetU16(6, laterFrag)),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "IPv6 fragment header, VIP", in: malExt6(syn6, 44, malFragHdr),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_fragment")},
		{name: "IPv6 fragment header, non-VIP", in: malExt6(syn6other, 44, malFragHdr),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "IPv6 hop-by-hop options, VIP", in: malExt6(syn6, 0, malHopByHop),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_ipv6_ext")},
		{name: "IPv6 routing header, VIP", in: malExt6(syn6, 43, malRouting),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_ipv6_ext")},
		{name: "IPv6 destination options, VIP", in: malExt6(syn6, 60, malDestOpts),
			verdict: pkttest.XDPDrop, stats: malDrop("drop_ipv6_ext")},
		{name: "IPv6 hop-by-hop options, non-VIP", in: malExt6(syn6other, 0, malHopByHop),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "IPv6 routing header, non-VIP", in: malExt6(syn6other, 43, malRouting),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
		{name: "IPv6 destination options, non-VIP", in: malExt6(syn6other, 60, malDestOpts),
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
	})
}

// TestMalformedUnusualButValid covers packets that look odd but are valid
// and must be balanced exactly like ordinary ones: IPv4 options, empty
// payloads, Ethernet padding, VLAN tags.
func TestMalformedUnusualButValid(t *testing.T) {
	// Router alert (4 bytes), and 40 bytes of record route + end of list,
	// the largest options an IHL can describe.
	routerAlert := []byte{148, 4, 0, 0}
	recordRoute := append([]byte{7, 39, 4}, make([]byte, 37)...)

	f4 := malFlow(malVIP4, malTCPPort, malDF)
	opts4 := malOpts4(pkttest.TCP(f4, pkttest.SYN), routerAlert)
	opts4max := malOpts4(pkttest.TCP(f4, pkttest.SYN), recordRoute)
	syn6f := malFlow(malVIP6, malTCPPort)
	syn6 := pkttest.TCP(syn6f, pkttest.SYN)
	udp4f := malFlow(malVIP4, malUDPPort)
	udp4 := pkttest.UDP(udp4f)
	udp6f := malFlow(malVIP6, malUDPPort)
	udp6 := pkttest.UDP(udp6f)
	// A UDP checksum of 0 means "none" over IPv4; the LB must then sum the
	// (empty) payload itself for the outer checksum.
	udp4nosum := malEdit(udp4, malSetU16(20+6, 0))
	ack4f := malFlow(malVIP4, malTCPPort)
	ack4 := pkttest.TCP(ack4f, pkttest.ACK)
	padded4f := malFlow(malVIP4, malUDPPort, malPayload(2))
	padded4 := slices.Concat(pkttest.UDP(padded4f), []byte{0xde, 0xad, 0xbe, 0xef, 0x55, 0xaa, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08})
	q4f := malFlow(malVIP4, malTCPPort, malVLAN(100))
	q4 := pkttest.TCP(q4f, pkttest.SYN)
	ad4 := malTPID(q4, 0x88a8)
	ad6f := malFlow(malVIP6, malTCPPort, malVLAN(100))
	ad6 := malTPID(pkttest.TCP(ad6f, pkttest.SYN), 0x88a8)
	qinq := malPushTag(q4, 0x88a8, 200)
	qq := malPushTag(q4, 0x8100, 200)
	qinqOther := malPushTag(pkttest.TCP(malFlow(malOther4, malTCPPort, malVLAN(100)), pkttest.SYN), 0x88a8, 200)

	runMalCases(t, []malCase{
		{name: "IPv4 options (router alert) are carried inside the tunnel", in: opts4,
			verdict: pkttest.XDPTX, stats: malTX(append(malSynMiss, "encap_gue")...),
			want: malGUE(f4, opts4, malBackend4)},
		{name: "IPv4 40 bytes of options (IHL 15) are carried inside the tunnel", in: opts4max,
			verdict: pkttest.XDPTX, stats: malTX(append(malSynMiss, "encap_gue")...),
			want: malGUE(f4, opts4max, malBackend4)},
		{name: "IPv4 TCP with no payload (bare ACK)", in: ack4,
			verdict: pkttest.XDPTX, stats: malTX(append(malAckMiss, "encap_gue")...),
			want: malGUE(ack4f, ack4, malBackend4)},
		{name: "IPv6 TCP with no payload (SYN)", in: syn6,
			verdict: pkttest.XDPTX, stats: malTX(append(malSynMiss, "encap_gue")...),
			want: malGUE(syn6f, syn6, malBackend6)},
		{name: "IPv4 UDP with no payload", in: udp4,
			verdict: pkttest.XDPTX, stats: malTX(append(malAckMiss, "encap_gue")...),
			want: malGUE(udp4f, udp4, malBackend4)},
		{name: "IPv4 UDP with no payload and no checksum", in: udp4nosum,
			verdict: pkttest.XDPTX, stats: malTX(append(malAckMiss, "encap_gue")...),
			want: malGUE(udp4f, udp4nosum, malBackend4)},
		{name: "IPv6 UDP with no payload", in: udp6,
			verdict: pkttest.XDPTX, stats: malTX(append(malAckMiss, "encap_gue")...),
			want: malGUE(udp6f, udp6, malBackend6)},
		{name: "IPv4 UDP with Ethernet padding: padding is not tunnelled", in: padded4,
			verdict: pkttest.XDPTX, stats: malTX(append(malAckMiss, "encap_gue")...),
			want: malGUE(padded4f, padded4, malBackend4)},
		{name: "single 802.1Q tag is kept", in: q4,
			verdict: pkttest.XDPTX, stats: malTX(append(malSynMiss, "encap_gue")...),
			want: malGUE(q4f, q4, malBackend4)},
		// A single 802.1ad (S-)tag is handled like an 802.1Q tag, and the
		// frame goes back out of the same port with the tag it came with.
		{name: "single 802.1ad tag is kept with its TPID, IPv4", in: ad4,
			verdict: pkttest.XDPTX, stats: malTX(append(malSynMiss, "encap_gue")...),
			want: malTPID(malGUE(q4f, ad4, malBackend4), 0x88a8)},
		{name: "single 802.1ad tag is kept with its TPID, IPv6", in: ad6,
			verdict: pkttest.XDPTX, stats: malTX(append(malSynMiss, "encap_gue")...),
			want: malTPID(malGUE(ad6f, ad6, malBackend6), 0x88a8)},
		{name: "802.1ad + 802.1Q (QinQ) to a VIP passes as a VLAN stack", in: qinq,
			verdict: pkttest.XDPPass, stats: malPass("pass_vlan_stack")},
		{name: "802.1Q + 802.1Q to a VIP passes as a VLAN stack", in: qq,
			verdict: pkttest.XDPPass, stats: malPass("pass_vlan_stack")},
		{name: "802.1ad + 802.1Q (QinQ) to a non-VIP passes as a VLAN stack", in: qinqOther,
			verdict: pkttest.XDPPass, stats: malPass("pass_vlan_stack")},
	})
}

// TestMalformedTooBig checks the tunnel MTU limit (default 1500): GUE over
// IPv4 adds 28 bytes and over IPv6 48, so 1472- and 1452-byte IP packets are
// the largest that are balanced.
func TestMalformedTooBig(t *testing.T) {
	// IP length = header + 8 (UDP) + payload.
	udp := func(dst netip.Addr, ipLen int, opts ...func(*pkttest.Flow)) (pkttest.Flow, []byte) {
		hdr := 20
		if dst.Is6() {
			hdr = 40
		}
		f := malFlow(dst, malUDPPort, append(opts, malPayload(ipLen-hdr-8))...)
		return f, pkttest.UDP(f)
	}
	at4f, at4 := udp(malVIP4, 1472, malDF)
	over4f, over4 := udp(malVIP4, 1473, malDF)
	over4noDF := pkttest.UDP(malFlow(malVIP4, malUDPPort, malPayload(1473-28)))
	big4f, big4 := udp(malVIP4, 3000, malDF)
	_, big4noDF := udp(malVIP4, 3000)
	big4tagf, big4tag := udp(malVIP4, 3000, malDF, malVLAN(100))
	at6f, at6 := udp(malVIP6, 1452)
	over6f, over6 := udp(malVIP6, 1453)
	big6f, big6 := udp(malVIP6, 3000)
	// The quote must cover IPv4 options too: IP header (24) + 8.
	opts4 := malOpts4(big4, []byte{148, 4, 0, 0})
	// BPF_PROG_RUN keeps at most 4096 − 256 (headroom) − 320 (tailroom for
	// skb_shared_info) = 3520 bytes in the linear buffer and puts the rest of
	// a larger frame in fragments, which this program (not "xdp.frags")
	// cannot see. It then finds the IP length beyond its data and, for a
	// VIP, drops the packet as truncated. A NIC in native mode never hands
	// such a frame to a program without frags support, and generic XDP
	// linearises it first, so there the too-big path below applies.
	_, jumbo4 := udp(malVIP4, 9000)
	_, jumbo4DF := udp(malVIP4, 9000, malDF)
	jumboOther := pkttest.UDP(malFlow(malOther4, malUDPPort, malPayload(9000-28)))

	runMalCases(t, []malCase{
		{name: "IPv4 1472 bytes, exactly the limit, is balanced", in: at4,
			verdict: pkttest.XDPTX, stats: malTX(append(malAckMiss, "encap_gue")...),
			want: malGUE(at4f, at4, malBackend4)},
		{name: "IPv4 1473 bytes with DF gets fragmentation needed", in: over4,
			verdict: pkttest.XDPTX, stats: malTX(append(malAckMiss, "ptb_sent")...),
			want: malTooBig(t, over4f, over4, 1500-28)},
		{name: "IPv4 1473 bytes without DF is dropped", in: over4noDF,
			verdict: pkttest.XDPDrop, stats: malDrop("drop_too_big", malAckMiss...)},
		{name: "IPv4 3000 bytes with DF gets fragmentation needed", in: big4,
			verdict: pkttest.XDPTX, stats: malTX(append(malAckMiss, "ptb_sent")...),
			want: malTooBig(t, big4f, big4, 1500-28)},
		{name: "IPv4 3000 bytes without DF is dropped", in: big4noDF,
			verdict: pkttest.XDPDrop, stats: malDrop("drop_too_big", malAckMiss...)},
		{name: "IPv4 3000 bytes with DF in an 802.1Q tag: the reply keeps the tag", in: big4tag,
			verdict: pkttest.XDPTX, stats: malTX(append(malAckMiss, "ptb_sent")...),
			want: malTooBig(t, big4tagf, big4tag, 1500-28)},
		{name: "IPv4 3000 bytes with DF and options: the quote holds the options", in: opts4,
			verdict: pkttest.XDPTX, stats: malTX(append(malAckMiss, "ptb_sent")...),
			want: malTooBig(t, big4f, opts4, 1500-28)},
		{name: "IPv6 1452 bytes, exactly the limit, is balanced", in: at6,
			verdict: pkttest.XDPTX, stats: malTX(append(malAckMiss, "encap_gue")...),
			want: malGUE(at6f, at6, malBackend6)},
		{name: "IPv6 1453 bytes gets packet too big", in: over6,
			verdict: pkttest.XDPTX, stats: malTX(append(malAckMiss, "ptb_sent")...),
			want: malTooBig(t, over6f, over6, 1500-48)},
		{name: "IPv6 3000 bytes gets packet too big", in: big6,
			verdict: pkttest.XDPTX, stats: malTX(append(malAckMiss, "ptb_sent")...),
			want: malTooBig(t, big6f, big6, 1500-48)},
		{name: "IPv4 9000-byte jumbo beyond the test-run linear buffer is dropped as truncated", in: jumbo4,
			verdict: pkttest.XDPDrop, stats: malDrop("drop_truncated")},
		{name: "IPv4 9000-byte jumbo with DF beyond the test-run linear buffer is dropped as truncated", in: jumbo4DF,
			verdict: pkttest.XDPDrop, stats: malDrop("drop_truncated")},
		{name: "IPv4 9000-byte jumbo to a non-VIP passes untouched", in: jumboOther,
			verdict: pkttest.XDPPass, stats: malPass("pass_not_vip")},
	})
}

// TestMalformedNoBackend: a VIP with no backend up drops its packets rather
// than passing them to a stack that does not own the address.
func TestMalformedNoBackend(t *testing.T) {
	vip := VIP{Addr: malEmpty4, Port: malTCPPort, Proto: l4.TCP}
	syn := pkttest.TCP(malFlow(malEmpty4, malTCPPort), pkttest.SYN)
	udpf := malFlow(malEmpty4, malUDPPort, malPayload(8))
	udp := pkttest.UDP(udpf)
	udpVIP := VIP{Addr: malEmpty4, Port: malUDPPort, Proto: l4.UDP}
	down := func(addrs ...string) []Backend {
		var bs []Backend
		for _, a := range addrs {
			b := be(a)
			b.Down = true
			bs = append(bs, b)
		}
		return bs
	}

	runMalCases(t, []malCase{
		{name: "VIP added without backends", in: syn,
			setup: func(t *testing.T, l *LB) {
				addVIP(t, l, vip, VIPOptions{})
			},
			verdict: pkttest.XDPDrop, stats: malDrop("drop_no_backend", malSynMiss...)},
		{name: "VIP whose backends were all marked down", in: syn,
			setup: func(t *testing.T, l *LB) {
				addVIP(t, l, vip, VIPOptions{}, be("10.1.0.5"), be("10.1.0.6"))
				if err := l.SetBackends(vip, down("10.1.0.5", "10.1.0.6")); err != nil {
					t.Fatal(err)
				}
			},
			verdict: pkttest.XDPDrop, stats: malDrop("drop_no_backend", malSynMiss...)},
		{name: "VIP whose backends were all removed", in: syn,
			setup: func(t *testing.T, l *LB) {
				addVIP(t, l, vip, VIPOptions{}, be("10.1.0.5"))
				if err := l.SetBackends(vip, nil); err != nil {
					t.Fatal(err)
				}
			},
			verdict: pkttest.XDPDrop, stats: malDrop("drop_no_backend", malSynMiss...)},
		{name: "stateless VIP without backends", in: syn,
			setup: func(t *testing.T, l *LB) {
				addVIP(t, l, vip, VIPOptions{Stateless: true})
			},
			verdict: pkttest.XDPDrop, stats: malDrop("drop_no_backend")},
		// The flow's connection-table entry names a backend that has since
		// gone down: the entry is stale and the empty ring has nothing else.
		{name: "established UDP flow after every backend went down", in: udp,
			setup: func(t *testing.T, l *LB) {
				addVIP(t, l, udpVIP, VIPOptions{}, be("10.1.0.5"))
				if res := pkttest.Run(t, l.Program(), udp); res.Verdict != pkttest.XDPTX {
					t.Fatalf("first packet of the flow: verdict %v, want %v", res.Verdict, pkttest.XDPTX)
				}
				if err := l.SetBackends(udpVIP, down("10.1.0.5")); err != nil {
					t.Fatal(err)
				}
			},
			verdict: pkttest.XDPDrop, stats: malDrop("drop_no_backend", "conn_stale", "conn_miss", "conn_miss_non_syn")},
	})
}
