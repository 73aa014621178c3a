package pkttest

import (
	"bytes"
	"errors"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// handGUE builds a GUE frame from explicit gopacket layers, not with GUE(),
// so that the decoders are tested against an encoding they did not write.
func handGUE(t *testing.T, inner []byte, dstPort uint16) []byte {
	t.Helper()
	return Serialize(t,
		&layers.Ethernet{SrcMAC: DefaultSrcMAC, DstMAC: DefaultDstMAC, EthernetType: layers.EthernetTypeIPv4},
		&layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
			SrcIP: tunnel4.Src.Addr().AsSlice(), DstIP: tunnel4.Dst.Addr().AsSlice()},
		&layers.UDP{SrcPort: 49200, DstPort: layers.UDPPort(dstPort)},
		gopacket.Payload(inner),
	)
}

func TestDecodeGUE(t *testing.T) {
	for _, tc := range []struct {
		name  string
		inner []byte
		check func(t *testing.T, p gopacket.Packet)
	}{
		{"IPv4 TCP", IPPacket(TCP(flow4, SYN)), func(t *testing.T, p gopacket.Packet) {
			tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if !ok || !tcp.SYN || tcp.DstPort != 443 {
				t.Errorf("inner layers %v", p.Layers())
			}
		}},
		{"IPv6 UDP", IPPacket(UDP(flow6)), func(t *testing.T, p gopacket.Packet) {
			ip, ok := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
			if !ok || !ip.DstIP.Equal(flow6.Dst.Addr().AsSlice()) || p.Layer(layers.LayerTypeUDP) == nil {
				t.Errorf("inner layers %v", p.Layers())
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			outer := Decode(handGUE(t, tc.inner, DefaultGUEPort))
			inner, err := DecodeGUE(outer)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(inner.Data(), tc.inner) {
				t.Errorf("inner bytes % x, want % x", inner.Data(), tc.inner)
			}
			tc.check(t, inner)

			viaInner, err := InnerPacket(outer, DefaultGUEPort)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(viaInner.Data(), tc.inner) {
				t.Errorf("InnerPacket bytes % x, want % x", viaInner.Data(), tc.inner)
			}
		})
	}
}

func TestDecodeGUEErrors(t *testing.T) {
	if _, err := DecodeGUE(Decode(TCP(flow4, SYN))); !errors.Is(err, ErrNotEncapsulated) {
		t.Errorf("TCP frame: err %v, want ErrNotEncapsulated", err)
	}
	if _, err := DecodeGUE(Decode(handGUE(t, []byte{0x20, 1, 2, 3}, DefaultGUEPort))); err == nil {
		t.Error("payload with IP version 2 decoded")
	}
	// A truncated inner packet comes back together with the error, so
	// that a failing test can still show it.
	inner := IPPacket(TCP(flow4, SYN))[:30]
	p, err := DecodeGUE(Decode(handGUE(t, inner, DefaultGUEPort)))
	if err == nil || p == nil || p.Layer(layers.LayerTypeIPv4) == nil {
		t.Errorf("truncated inner: packet %v, err %v", p, err)
	}
}

func TestInnerPacket(t *testing.T) {
	inner4 := IPPacket(TCP(flow4, SYN))
	inner6 := IPPacket(UDP(flow6))
	cases := []struct {
		name  string
		frame []byte
		port  uint16
		want  []byte // nil: not encapsulated
	}{
		{"IPIP", IPIP(tunnel4, inner4), DefaultGUEPort, inner4},
		{"IPv6 in IPv4", IPIP(tunnel4, inner6), DefaultGUEPort, inner6},
		{"IP6IP6", IPIP(tunnel6, inner6), DefaultGUEPort, inner6},
		{"IPv4 in IPv6", IPIP(tunnel6, inner4), DefaultGUEPort, inner4},
		{"GUE over IPv6", GUE(tunnel6, inner4), DefaultGUEPort, inner4},
		{"GUE on another port", handGUE(t, inner4, 7777), 7777, inner4},
		{"GUE port mismatch", handGUE(t, inner4, 7777), DefaultGUEPort, nil},
		{"plain TCP", TCP(flow4, SYN), DefaultGUEPort, nil},
		{"UDP to the GUE port without IP inside", UDP(Flow{Src: flow4.Src, Dst: tunnel4.Dst, Payload: []byte("x")}), DefaultGUEPort, nil},
		{"VLAN-tagged IPIP", IPIP(Flow{Src: tunnel4.Src, Dst: tunnel4.Dst, VLAN: 3}, inner4), DefaultGUEPort, inner4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := InnerPacket(Decode(tc.frame), tc.port)
			if tc.want == nil {
				if !errors.Is(err, ErrNotEncapsulated) {
					t.Errorf("err %v, want ErrNotEncapsulated", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p.Data(), tc.want) {
				t.Errorf("inner % x, want % x", p.Data(), tc.want)
			}
		})
	}
}

// TestInnerPacketAfterExtensionHeader puts a destination options header
// between the outer IPv6 header and the tunnelled packet.
func TestInnerPacketAfterExtensionHeader(t *testing.T) {
	inner := IPPacket(TCP(flow4, SYN))
	ls := tunnel6.Headers(layers.IPProtocolIPv6Destination)
	// Next header IPv4, length 0 (8 bytes), then a PadN option of 4 bytes.
	dstOpts := gopacket.Payload{byte(layers.IPProtocolIPv4), 0, 1, 4, 0, 0, 0, 0}
	fr := Serialize(t, append(ls, dstOpts, gopacket.Payload(inner))...)
	p, err := InnerPacket(Decode(fr), DefaultGUEPort)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.Data(), inner) {
		t.Errorf("inner % x, want % x", p.Data(), inner)
	}
}
