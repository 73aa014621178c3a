package pkttest

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Default MAC addresses, used when a Flow leaves them unset. They are
// locally administered so that a frame written to a pcap can never be
// mistaken for one from a real NIC.
var (
	DefaultSrcMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	DefaultDstMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
)

// Flow describes the headers of a frame up to and including IP, plus the
// ports and payload that the transport constructors (TCP, UDP, …) use. Its
// zero values mean "the usual": untagged, TTL 64, no DF, default MACs, so a
// test case only spells out what it is about. The address family comes
// from Src and Dst, which must agree.
type Flow struct {
	SrcMAC, DstMAC net.HardwareAddr // nil: DefaultSrcMAC, DefaultDstMAC
	VLAN           uint16           // 802.1Q VLAN ID; 0 sends the frame untagged

	Src, Dst netip.AddrPort // ports are ignored by the ICMP constructors

	TTL       uint8  // IPv4 TTL or IPv6 hop limit; 0 means 64
	TOS       uint8  // IPv4 TOS byte or IPv6 traffic class
	DF        bool   // IPv4 don't-fragment
	ID        uint16 // IPv4 identification
	FlowLabel uint32 // IPv6 flow label (20 bits)

	Payload []byte // bytes after the transport header
}

// TCPFlags is a set of TCP header flags, combined with |.
type TCPFlags uint8

// TCP flags, in their on-the-wire bit order.
const (
	FIN TCPFlags = 1 << iota
	SYN
	RST
	PSH
	ACK
	URG
	ECE
	CWR
)

// is6 reports the flow's family and panics on a mixed or unset pair, since
// a frame with one IPv4 and one IPv6 address cannot be built.
func (f Flow) is6() bool {
	s, d := f.Src.Addr(), f.Dst.Addr()
	switch {
	case s.Is4() && d.Is4():
		return false
	case s.Is6() && d.Is6():
		return true
	}
	panic(fmt.Sprintf("pkttest: flow needs two addresses of one family, got src %v dst %v", s, d))
}

// Headers returns the Ethernet (plus 802.1Q) and IP layers of the flow, with
// the IP protocol / next header set to proto. Tests that need a transport
// header the constructors do not offer append their own layer and call
// Serialize; the returned layers can also be edited first (for a TTL of 0,
// IPv4 options, …).
func (f Flow) Headers(proto layers.IPProtocol) []gopacket.SerializableLayer {
	v6 := f.is6()
	eth := &layers.Ethernet{SrcMAC: f.SrcMAC, DstMAC: f.DstMAC, EthernetType: layers.EthernetTypeIPv4}
	if eth.SrcMAC == nil {
		eth.SrcMAC = DefaultSrcMAC
	}
	if eth.DstMAC == nil {
		eth.DstMAC = DefaultDstMAC
	}
	if v6 {
		eth.EthernetType = layers.EthernetTypeIPv6
	}
	out := []gopacket.SerializableLayer{eth}
	if f.VLAN != 0 {
		out = append(out, &layers.Dot1Q{VLANIdentifier: f.VLAN, Type: eth.EthernetType})
		eth.EthernetType = layers.EthernetTypeDot1Q
	}
	ttl := f.TTL
	if ttl == 0 {
		ttl = 64
	}
	if v6 {
		return append(out, &layers.IPv6{
			Version:      6,
			TrafficClass: f.TOS,
			FlowLabel:    f.FlowLabel,
			NextHeader:   proto,
			HopLimit:     ttl,
			SrcIP:        f.Src.Addr().AsSlice(),
			DstIP:        f.Dst.Addr().AsSlice(),
		})
	}
	ip := &layers.IPv4{
		Version:  4,
		TOS:      f.TOS,
		Id:       f.ID,
		TTL:      ttl,
		Protocol: proto,
		SrcIP:    f.Src.Addr().AsSlice(),
		DstIP:    f.Dst.Addr().AsSlice(),
	}
	if f.DF {
		ip.Flags = layers.IPv4DontFragment
	}
	return append(out, ip)
}

// TCP builds a TCP segment of the flow with the given flags. Sequence number
// is 1, and the acknowledgement number is 1 when ACK is set, 0 otherwise;
// window 65535, no options. Like every frame constructor it panics on an
// invalid flow, so that table-driven cases can be written as literals
// outside any test function.
func TCP(f Flow, flags TCPFlags) []byte {
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(f.Src.Port()),
		DstPort: layers.TCPPort(f.Dst.Port()),
		Seq:     1,
		Window:  65535,
		FIN:     flags&FIN != 0,
		SYN:     flags&SYN != 0,
		RST:     flags&RST != 0,
		PSH:     flags&PSH != 0,
		ACK:     flags&ACK != 0,
		URG:     flags&URG != 0,
		ECE:     flags&ECE != 0,
		CWR:     flags&CWR != 0,
	}
	if tcp.ACK {
		tcp.Ack = 1
	}
	return mustSerialize(append(f.Headers(layers.IPProtocolTCP), tcp, gopacket.Payload(f.Payload)))
}

// UDP builds a UDP datagram of the flow, with a checksum.
func UDP(f Flow) []byte {
	udp := &layers.UDP{SrcPort: layers.UDPPort(f.Src.Port()), DstPort: layers.UDPPort(f.Dst.Port())}
	return mustSerialize(append(f.Headers(layers.IPProtocolUDP), udp, gopacket.Payload(f.Payload)))
}

// ICMPEcho builds an ICMP (IPv4) or ICMPv6 (IPv6) echo request.
func ICMPEcho(f Flow, id, seq uint16) []byte {
	return echo(f, id, seq, false)
}

// ICMPEchoReply builds an ICMP (IPv4) or ICMPv6 (IPv6) echo reply.
func ICMPEchoReply(f Flow, id, seq uint16) []byte {
	return echo(f, id, seq, true)
}

func echo(f Flow, id, seq uint16, reply bool) []byte {
	if f.is6() {
		typ := uint8(layers.ICMPv6TypeEchoRequest)
		if reply {
			typ = layers.ICMPv6TypeEchoReply
		}
		return mustSerialize(append(f.Headers(layers.IPProtocolICMPv6),
			&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, 0)},
			&layers.ICMPv6Echo{Identifier: id, SeqNumber: seq},
			gopacket.Payload(f.Payload)))
	}
	typ := uint8(layers.ICMPv4TypeEchoRequest)
	if reply {
		typ = layers.ICMPv4TypeEchoReply
	}
	return mustSerialize(append(f.Headers(layers.IPProtocolICMPv4),
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, 0), Id: id, Seq: seq},
		gopacket.Payload(f.Payload)))
}

// GUE builds a GUE variant 1 frame: outer's headers, UDP, then inner, which
// must be an IP packet (see IPPacket). outer.Payload is ignored. A zero
// destination port means DefaultGUEPort. The outer UDP checksum is filled in,
// as the project's wire format requires.
func GUE(outer Flow, inner []byte) []byte {
	ipVersion(inner) // reject non-IP payloads early, with a clear message
	if outer.Dst.Port() == 0 {
		outer.Dst = netip.AddrPortFrom(outer.Dst.Addr(), DefaultGUEPort)
	}
	outer.Payload = inner
	return UDP(outer)
}

// IPIP builds an IP-in-IP frame: outer's headers with protocol 4 or 41
// chosen from inner's IP version, then inner, which must be an IP packet.
// This covers IPIP, IP6IP6, IPv4-in-IPv6 and IPv6-in-IPv4. outer's ports and
// Payload are ignored.
func IPIP(outer Flow, inner []byte) []byte {
	proto := layers.IPProtocolIPv4
	if ipVersion(inner) == 6 {
		proto = layers.IPProtocolIPv6
	}
	return mustSerialize(append(outer.Headers(proto), gopacket.Payload(inner)))
}

// ipVersion returns 4 or 6 from the first nibble, panicking otherwise.
func ipVersion(pkt []byte) int {
	if len(pkt) == 0 || (pkt[0]>>4 != 4 && pkt[0]>>4 != 6) {
		panic(fmt.Sprintf("pkttest: not an IP packet (first bytes % x)", pkt[:min(len(pkt), 4)]))
	}
	return int(pkt[0] >> 4)
}

// IPPacket returns the IP packet carried by an Ethernet frame: the bytes
// after the Ethernet header and any 802.1Q/802.1ad tags, cut to the length
// the IP header states so that Ethernet padding is not carried along. It is
// how a test derives the inner packet of an expected encapsulated frame from
// the frame it sent. It panics if the frame does not carry IPv4 or IPv6.
func IPPacket(frame []byte) []byte {
	off := 12
	for {
		if len(frame) < off+2 {
			panic(fmt.Sprintf("pkttest: frame of %d bytes too short for an Ethernet header", len(frame)))
		}
		switch et := layers.EthernetType(binary.BigEndian.Uint16(frame[off:])); et {
		case layers.EthernetTypeDot1Q, layers.EthernetTypeQinQ:
			off += 4
			continue
		case layers.EthernetTypeIPv4, layers.EthernetTypeIPv6:
			pkt := frame[off+2:]
			var n int
			switch {
			case et == layers.EthernetTypeIPv4 && len(pkt) >= 4:
				n = int(binary.BigEndian.Uint16(pkt[2:]))
			case et == layers.EthernetTypeIPv6 && len(pkt) >= 6:
				n = 40 + int(binary.BigEndian.Uint16(pkt[4:]))
			default:
				panic(fmt.Sprintf("pkttest: %v header truncated", et))
			}
			if n < len(pkt) {
				pkt = pkt[:n]
			}
			return pkt
		default:
			panic(fmt.Sprintf("pkttest: frame carries EtherType %v, not IP", et))
		}
	}
}

// Serialize encodes layers into a frame, fixing lengths and computing
// checksums. Each TCP, UDP and ICMPv6 layer gets the nearest IP layer before
// it as its checksum pseudo-header, which gopacket otherwise silently
// leaves out; the nearest one is right for tunnels, whose inner transport
// header belongs to the inner IP header.
//
// Frames are not padded to Ethernet's 60-byte minimum (gopacket pads,
// Serialize removes it): BPF_PROG_RUN does not need padding, and padding in
// an input would reappear as unexplained trailing bytes in the output. A test
// of how a program treats padding appends it explicitly.
func Serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	b, err := serialize(ls)
	if err != nil {
		t.Fatalf("serialize %s: %v", layerNames(ls), err)
	}
	return b
}

func mustSerialize(ls []gopacket.SerializableLayer) []byte {
	b, err := serialize(ls)
	if err != nil {
		panic(fmt.Sprintf("pkttest: serialize %s: %v", layerNames(ls), err))
	}
	return b
}

func serialize(ls []gopacket.SerializableLayer) ([]byte, error) {
	if len(ls) == 0 {
		return nil, fmt.Errorf("no layers")
	}
	var nl gopacket.NetworkLayer
	for _, l := range ls {
		switch l := l.(type) {
		case *layers.IPv4:
			nl = l
		case *layers.IPv6:
			nl = l
		case *layers.TCP:
			if err := setPseudoHeader(l, nl); err != nil {
				return nil, err
			}
		case *layers.UDP:
			if err := setPseudoHeader(l, nl); err != nil {
				return nil, err
			}
		case *layers.ICMPv6:
			if err := setPseudoHeader(l, nl); err != nil {
				return nil, err
			}
		}
	}
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		return nil, err
	}
	out := buf.Bytes()
	if _, ok := ls[0].(*layers.Ethernet); ok && len(out) == 60 {
		// Ethernet.SerializeTo pads to 60 bytes; measure the frame without
		// it by serializing everything after the Ethernet header again.
		rest := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(rest, opts, ls[1:]...); err != nil {
			return nil, err
		}
		out = out[:14+len(rest.Bytes())]
	}
	return out, nil
}

func setPseudoHeader(l interface {
	SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
}, nl gopacket.NetworkLayer) error {
	if nl == nil {
		return fmt.Errorf("%T has no IP layer before it to checksum against", l)
	}
	return l.SetNetworkLayerForChecksum(nl)
}

func layerNames(ls []gopacket.SerializableLayer) string {
	s := ""
	for i, l := range ls {
		if i > 0 {
			s += "/"
		}
		s += l.LayerType().String()
	}
	return s
}
