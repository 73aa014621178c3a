package agent

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/sluice-dp/sluice/internal/pkttest"
)

// This file builds the tests' frames from the wire format of docs/lb.md
// and docs/agent.md with gopacket and pkttest, never from the program's
// output.

const guePort = 6080

// toVM is a flow the host sends to the VM; fromVM one the VM sends.
func toVM(src, dst netip.AddrPort) pkttest.Flow {
	return pkttest.Flow{SrcMAC: hostMAC, DstMAC: vmMAC, Src: src, Dst: dst, DF: true, TTL: 57, TOS: 0xb8, ID: 0x1234}
}

func fromVM(src, dst netip.AddrPort) pkttest.Flow {
	return pkttest.Flow{SrcMAC: vmMAC, DstMAC: hostMAC, Src: src, Dst: dst, DF: true, TTL: 64, ID: 0x4321}
}

// outer is the outer flow of a tunnel from the LB node of dst's family to
// dst, which is a backend address or not.
func outer(dst netip.Addr) pkttest.Flow {
	src := lbNode4
	if dst.Is6() {
		src = lbNode6
	}
	return pkttest.Flow{
		SrcMAC: hostMAC, DstMAC: vmMAC, TTL: 63,
		Src: netip.AddrPortFrom(src, 49200), Dst: netip.AddrPortFrom(dst, guePort),
	}
}

// gue0 builds a GUE variant 0 frame: UDP to the GUE port carrying the
// 4-byte GUE header (version 0, C bit, hlen, proto/ctype, flags 0), hlen
// words of optional fields, then payload.
func gue0(f pkttest.Flow, control bool, hlen int, proto uint8, payload []byte) []byte {
	h := []byte{byte(hlen & 0x1f), proto, 0, 0}
	if control {
		h[0] |= 0x20
	}
	opts := make([]byte, 4*hlen)
	for i := range opts {
		opts[i] = byte(0xa0 + i)
	}
	f.Payload = append(append(h, opts...), payload...)
	return pkttest.UDP(f)
}

// gueRaw builds a UDP frame to the GUE port with an arbitrary payload.
func gueRaw(f pkttest.Flow, payload []byte) []byte {
	f.Payload = payload
	return pkttest.UDP(f)
}

func tcp(f pkttest.Flow, flags pkttest.TCPFlags, payload string) []byte {
	f.Payload = []byte(payload)
	return pkttest.TCP(f, flags)
}

func udp(f pkttest.Flow, payload string) []byte {
	f.Payload = []byte(payload)
	return pkttest.UDP(f)
}

// udpZero is a UDP datagram without checksum (IPv4 only).
func udpZero(t testing.TB, f pkttest.Flow, payload string) []byte {
	t.Helper()
	frame := udp(f, payload)
	off := len(frame) - len(payload) - 8
	if binary.BigEndian.Uint16(frame[off:]) != f.Src.Port() {
		t.Fatalf("udp header not at offset %d", off)
	}
	frame[off+6], frame[off+7] = 0, 0
	return frame
}

// icmpError builds an ICMP (IPv4) or ICMPv6 error of f carrying word (the
// next-hop MTU or zero) before quote.
func icmpError(t testing.TB, f pkttest.Flow, typ, code uint8, word uint32, quote []byte) []byte {
	t.Helper()
	if f.Src.Addr().Is4() {
		return pkttest.Serialize(t, append(f.Headers(layers.IPProtocolICMPv4),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code), Id: uint16(word >> 16), Seq: uint16(word)},
			gopacket.Payload(quote))...)
	}
	b := binary.BigEndian.AppendUint32(nil, word)
	return pkttest.Serialize(t, append(f.Headers(layers.IPProtocolICMPv6),
		&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, code)},
		gopacket.Payload(append(b, quote...)))...)
}

// quote8 is what an IPv4 error quotes: the IP header and 8 bytes.
func quote8(frame []byte) []byte {
	ip := pkttest.IPPacket(frame)
	return ip[:int(ip[0]&0xf)*4+8]
}

// ipv4Fix recomputes the IPv4 header checksum at off after a test edited
// the header on purpose.
func ipv4Fix(frame []byte, off int) []byte {
	hlen := int(frame[off]&0xf) * 4
	frame[off+10], frame[off+11] = 0, 0
	binary.BigEndian.PutUint16(frame[off+10:], pkttest.Checksum(frame[off:off+hlen]))
	return frame
}

// edit returns a copy of frame changed by fn.
func edit(frame []byte, fn func(b []byte) []byte) []byte {
	return fn(append([]byte(nil), frame...))
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func withPort(a netip.Addr, p uint16) netip.AddrPort { return netip.AddrPortFrom(a, p) }

// arp is an ARP request from the host: not IP at all.
func arp(t testing.TB) []byte {
	t.Helper()
	return pkttest.Serialize(t,
		&layers.Ethernet{SrcMAC: hostMAC, DstMAC: vmMAC, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: hostMAC, SourceProtAddress: []byte{10, 1, 0, 1},
			DstHwAddress: make([]byte, 6), DstProtAddress: []byte{10, 1, 0, 5}})
}

// pktPayload is raw bytes as a gopacket layer.
func pktPayload(b []byte) gopacket.SerializableLayer { return gopacket.Payload(b) }
