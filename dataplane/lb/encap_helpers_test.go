package lb

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/sluice-dp/sluice/internal/pkttest"
)

// Helpers of the encapsulation tests. Every expected value here is derived
// from the DESIGN wire format with ctl/jhash and ctl/maglev, never from what
// the program produced.

// encGUESport is DESIGN §4's outer source port.
func encGUESport(h uint32) uint16 { return uint16(49152 + h&0x3fff) }

// encLow32 is the low 32 bits of an address (all of an IPv4 one).
func encLow32(a netip.Addr) [4]byte {
	b := a.AsSlice()
	return [4]byte(b[len(b)-4:])
}

// encIPIPSource is the crafted outer source of an IPIP packet: for an IPv4
// prefix the prefix with its host bits taken from sport XOR the client's low
// 32 address bits; for an IPv6 /64 the prefix, the client's low 32 address
// bits, then the port in the last 32 bits.
func encIPIPSource(prefix netip.Prefix, client netip.AddrPort) netip.Addr {
	low := encLow32(client.Addr())
	port := uint32(client.Port())
	if prefix.Addr().Is4() {
		p := prefix.Masked().Addr().As4()
		host := (port ^ binary.BigEndian.Uint32(low[:])) & uint32(uint64(1)<<(32-prefix.Bits())-1)
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(p[:])|host)
		return netip.AddrFrom4(b)
	}
	b := prefix.Masked().Addr().As16()
	copy(b[8:12], low[:])
	binary.BigEndian.PutUint32(b[12:], port)
	return netip.AddrFrom16(b)
}

// encMaglevPick returns the backend owning hash's slot in a Maglev table
// built here from the same backends, size and seed as the program's ring.
func encMaglevPick(t testing.TB, backends []Backend, size uint32, seed uint64, hash uint32) netip.Addr {
	t.Helper()
	return newModelRing(t, backends, size, seed).pick(hash)
}

// encPayload is n bytes that are neither zero nor repetitive, so that a
// checksum computed over the wrong bytes or the wrong length shows.
func encPayload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*37 + 0xa5)
	}
	return p
}

// encUDPZeroCsum builds a UDP datagram of n payload bytes and clears its
// checksum ("none", legal over IPv4 only).
func encUDPZeroCsum(t testing.TB, f pkttest.Flow, n int) []byte {
	t.Helper()
	return encUDPZeroCsumPayload(t, f, encPayload(n))
}

func encUDPZeroCsumPayload(t testing.TB, f pkttest.Flow, payload []byte) []byte {
	t.Helper()
	n := len(payload)
	udp := &layers.UDP{SrcPort: layers.UDPPort(f.Src.Port()), DstPort: layers.UDPPort(f.Dst.Port())}
	frame := pkttest.Serialize(t, append(f.Headers(layers.IPProtocolUDP), udp, gopacket.Payload(payload))...)
	off := len(frame) - n - 8
	if binary.BigEndian.Uint16(frame[off:]) != f.Src.Port() {
		t.Fatalf("udp header not at offset %d", off)
	}
	frame[off+6], frame[off+7] = 0, 0
	return frame
}

// encTCPWithIPv4Options builds a TCP segment whose IPv4 header has options.
func encTCPWithIPv4Options(t testing.TB, f pkttest.Flow, flags pkttest.TCPFlags, opts []layers.IPv4Option) []byte {
	t.Helper()
	hs := f.Headers(layers.IPProtocolTCP)
	hs[len(hs)-1].(*layers.IPv4).Options = opts
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(f.Src.Port()), DstPort: layers.TCPPort(f.Dst.Port()),
		Seq: 1, Window: 65535,
		SYN: flags&pkttest.SYN != 0, ACK: flags&pkttest.ACK != 0, PSH: flags&pkttest.PSH != 0,
	}
	if tcp.ACK {
		tcp.Ack = 1
	}
	return pkttest.Serialize(t, append(hs, tcp, gopacket.Payload(f.Payload))...)
}

// encUDPWithIPv4Options builds a UDP datagram whose IPv4 header has options,
// with its checksum cleared when zeroCsum is set.
func encUDPWithIPv4Options(t testing.TB, f pkttest.Flow, opts []layers.IPv4Option, zeroCsum bool) []byte {
	t.Helper()
	hs := f.Headers(layers.IPProtocolUDP)
	hs[len(hs)-1].(*layers.IPv4).Options = opts
	udp := &layers.UDP{SrcPort: layers.UDPPort(f.Src.Port()), DstPort: layers.UDPPort(f.Dst.Port())}
	frame := pkttest.Serialize(t, append(hs, udp, gopacket.Payload(f.Payload))...)
	if zeroCsum {
		off := len(frame) - len(f.Payload) - 8
		frame[off+6], frame[off+7] = 0, 0
	}
	return frame
}

// encICMPError builds an ICMP (IPv4) or ICMPv6 (IPv6) error of the given
// type and code from f.Src to f.Dst, quoting quote.
func encICMPError(t testing.TB, f pkttest.Flow, typ, code uint8, quote []byte) []byte {
	t.Helper()
	if f.Src.Addr().Is4() {
		return pkttest.Serialize(t, append(f.Headers(layers.IPProtocolICMPv4),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code)},
			gopacket.Payload(quote))...)
	}
	// ICMPv6 errors have 4 unused bytes (or the MTU) before the quote.
	return pkttest.Serialize(t, append(f.Headers(layers.IPProtocolICMPv6),
		&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, code)},
		gopacket.Payload(append(make([]byte, 4), quote...)))...)
}

// encQuote is what a router quotes of a packet: its IP header and the
// first 8 bytes after it.
func encQuote(frame []byte) []byte {
	ip := pkttest.IPPacket(frame)
	hlen := 40
	if ip[0]>>4 == 4 {
		hlen = int(ip[0]&0xf) * 4
	}
	return ip[:hlen+8]
}

// encPad pads a frame to size bytes with fill, as a NIC or switch would.
func encPad(frame []byte, size int, fill byte) []byte {
	for len(frame) < size {
		frame = append(frame, fill)
	}
	return frame
}

// encSetPCP sets the priority bits of a frame's 802.1Q tag, which Flow does
// not expose, so that a test can see the whole TCI is kept.
func encSetPCP(frame []byte, pcp uint8) []byte {
	frame[14] = frame[14]&0x1f | pcp<<5
	return frame
}

// encOuter is what DESIGN §4 says the outer headers of a packet from in
// (the flow the input frame was built from) toward backend must be.
type encOuter struct {
	in      pkttest.Flow // the input frame's flow: MACs, VLAN, TOS, DF
	inner   []byte       // the inner IP packet
	backend netip.Addr
	hash    uint32 // 5-tuple flow hash
	cfg     Config // in force, defaults filled in
	ipip    bool
	client  netip.AddrPort // the client side of the flow, for IPIP sources
}

func (o encOuter) frame() []byte {
	dstMAC := o.in.DstMAC
	if dstMAC == nil {
		dstMAC = pkttest.DefaultDstMAC
	}
	f := pkttest.Flow{
		SrcMAC: dstMAC,
		DstMAC: o.cfg.GatewayMAC,
		VLAN:   o.in.VLAN,
		TTL:    64,
		TOS:    o.in.TOS,
		ID:     0,
	}
	innerV6 := o.inner[0]>>4 == 6
	var src netip.Addr
	switch {
	case o.ipip && o.backend.Is4():
		src = encIPIPSource(o.cfg.IPIPPrefixV4, o.client)
	case o.ipip:
		src = encIPIPSource(o.cfg.IPIPPrefixV6, o.client)
	case o.backend.Is4():
		src = o.cfg.SourceV4
	default:
		src = o.cfg.SourceV6
	}
	if o.backend.Is4() {
		// IPv6 never fragments on the way, so an IPv6 inner packet is DF.
		f.DF = o.in.DF || innerV6
	} else {
		f.FlowLabel = o.hash & 0xfffff
	}
	if o.ipip {
		f.Src = netip.AddrPortFrom(src, 0)
		f.Dst = netip.AddrPortFrom(o.backend, 0)
		return pkttest.IPIP(f, o.inner)
	}
	f.Src = netip.AddrPortFrom(src, encGUESport(o.hash))
	f.Dst = netip.AddrPortFrom(o.backend, o.cfg.GUEPort)
	return pkttest.GUE(f, o.inner)
}

// encCheckTraffic checks that the VIP and the (VIP, backend) pair counted
// the given packets and bytes, and that no other VIP or backend counted
// anything.
func encCheckTraffic(t testing.TB, before, after Counters, vip VIP, backend netip.Addr, packets, bytes uint64) {
	t.Helper()
	if _, ok := after.VIPs[vip]; !ok {
		t.Errorf("no counters for vip %v", vip)
	}
	if _, ok := after.Backends[vip][backend]; !ok {
		t.Errorf("no counters for vip %v backend %v", vip, backend)
	}
	for v, a := range after.VIPs {
		d := Traffic{a.Packets - before.VIPs[v].Packets, a.Bytes - before.VIPs[v].Bytes}
		want := Traffic{}
		if v == vip {
			want = Traffic{packets, bytes}
		}
		if d != want {
			t.Errorf("vip %v traffic moved by %+v, want %+v", v, d, want)
		}
		for b, a := range after.Backends[v] {
			d := Traffic{a.Packets - before.Backends[v][b].Packets, a.Bytes - before.Backends[v][b].Bytes}
			want := Traffic{}
			if v == vip && b == backend {
				want = Traffic{packets, bytes}
			}
			if d != want {
				t.Errorf("vip %v backend %v traffic moved by %+v, want %+v", v, b, d, want)
			}
		}
	}
}

// encOuterFields reads the outer destination, UDP source port (0 for
// IPIP) and flow label (0 for IPv4) of an encapsulated frame.
func encOuterFields(t testing.TB, pkt gopacket.Packet) (dst netip.Addr, sport uint16, label uint32) {
	t.Helper()
	switch ip := pkt.NetworkLayer().(type) {
	case *layers.IPv4:
		dst, _ = netip.AddrFromSlice(ip.DstIP)
	case *layers.IPv6:
		dst, _ = netip.AddrFromSlice(ip.DstIP)
		label = ip.FlowLabel
	default:
		t.Fatalf("output has no outer IP layer: %v", pkt)
	}
	if udp, ok := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
		sport = uint16(udp.SrcPort)
	}
	return dst, sport, label
}

func encMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// encUDPChecksum is the checksum field of a frame's first (outermost) UDP
// header.
func encUDPChecksum(t testing.TB, frame []byte) uint16 {
	t.Helper()
	udp, ok := pkttest.Decode(frame).Layer(layers.LayerTypeUDP).(*layers.UDP)
	if !ok {
		t.Fatalf("no UDP header in % x", frame)
	}
	return udp.Checksum
}
