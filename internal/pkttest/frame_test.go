package pkttest

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// TestTCPBytes writes out a SYN by hand, following RFC 791 and RFC 793,
// and compares it with the constructor's output byte for byte.
func TestTCPBytes(t *testing.T) {
	want := []byte{
		// Ethernet: dst, src, IPv4
		0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00,
		// IPv4: version 4 IHL 5, TOS 0x10, length 40, id 0x1234, DF, TTL 64, TCP, checksum, addresses
		0x45, 0x10, 0x00, 0x28, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00,
		198, 51, 100, 7, 192, 0, 2, 10,
		// TCP: ports 40000 443, seq 1, ack 0, data offset 5, SYN, window 65535, checksum, urgent
		0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00,
	}
	ipCsum := Checksum(want[14:34])
	binary.BigEndian.PutUint16(want[24:], ipCsum)
	pseudo := []byte{198, 51, 100, 7, 192, 0, 2, 10, 0, 6, 0, 20}
	binary.BigEndian.PutUint16(want[50:], Checksum(pseudo, want[34:]))

	got := TCP(Flow{Src: flow4.Src, Dst: flow4.Dst, TOS: 0x10, ID: 0x1234, DF: true}, SYN)
	if !bytes.Equal(got, want) {
		t.Errorf("TCP frame\n got % x\nwant % x", got, want)
	}
}

func TestFlowFields(t *testing.T) {
	t.Run("VLAN", func(t *testing.T) {
		fr := UDP(Flow{Src: flow4.Src, Dst: flow4.Dst, VLAN: 0x123})
		if et := binary.BigEndian.Uint16(fr[12:]); et != 0x8100 {
			t.Errorf("outer EtherType %#04x, want 0x8100", et)
		}
		if tci := binary.BigEndian.Uint16(fr[14:]); tci != 0x123 {
			t.Errorf("TCI %#04x, want VLAN 0x123", tci)
		}
		if et := binary.BigEndian.Uint16(fr[16:]); et != 0x0800 {
			t.Errorf("inner EtherType %#04x, want IPv4", et)
		}
		if len(fr) != 14+4+20+8 {
			t.Errorf("length %d, want %d", len(fr), 14+4+20+8)
		}
	})
	t.Run("IPv6", func(t *testing.T) {
		fr := TCP(Flow{Src: flow6.Src, Dst: flow6.Dst, TOS: 0xb8, FlowLabel: 0xabcde, TTL: 9}, SYN|ACK)
		ip := fr[14:]
		if v := binary.BigEndian.Uint32(ip); v != 6<<28|0xb8<<20|0xabcde {
			t.Errorf("version/class/label word %#08x", v)
		}
		if ip[6] != 6 || ip[7] != 9 {
			t.Errorf("next header %d hop limit %d, want 6 and 9", ip[6], ip[7])
		}
		if src := netip.AddrFrom16([16]byte(ip[8:24])); src != flow6.Src.Addr() {
			t.Errorf("source %v", src)
		}
		tcp := ip[40:]
		if tcp[13] != 0x12 || binary.BigEndian.Uint32(tcp[8:]) != 1 {
			t.Errorf("flags %#02x ack %d, want SYN|ACK and ack 1", tcp[13], binary.BigEndian.Uint32(tcp[8:]))
		}
	})
	t.Run("all TCP flags", func(t *testing.T) {
		fr := TCP(flow4, FIN|SYN|RST|PSH|ACK|URG|ECE|CWR)
		if fr[34+13] != 0xff {
			t.Errorf("flags byte %#02x, want 0xff", fr[34+13])
		}
	})
	t.Run("echo types", func(t *testing.T) {
		for _, tc := range []struct {
			fr   []byte
			off  int
			want byte
		}{
			{ICMPEcho(flow4, 1, 2), 34, 8},
			{ICMPEchoReply(flow4, 1, 2), 34, 0},
			{ICMPEcho(flow6, 1, 2), 54, 128},
			{ICMPEchoReply(flow6, 1, 2), 54, 129},
		} {
			if tc.fr[tc.off] != tc.want {
				t.Errorf("ICMP type %d, want %d", tc.fr[tc.off], tc.want)
			}
			if id, seq := binary.BigEndian.Uint16(tc.fr[tc.off+4:]), binary.BigEndian.Uint16(tc.fr[tc.off+6:]); id != 1 || seq != 2 {
				t.Errorf("id %d seq %d, want 1 and 2", id, seq)
			}
		}
	})
	t.Run("no padding", func(t *testing.T) {
		if fr := TCP(flow4, SYN); len(fr) != 54 {
			t.Errorf("SYN is %d bytes, want 54 (no Ethernet padding)", len(fr))
		}
		if fr := UDP(flow4); len(fr) != 42 {
			t.Errorf("empty UDP is %d bytes, want 42", len(fr))
		}
	})
}

func TestMixedFamilyPanics(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "one family") {
			t.Errorf("recovered %v, want a family complaint", r)
		}
	}()
	TCP(Flow{Src: flow4.Src, Dst: flow6.Dst}, SYN)
}

func TestIPPacket(t *testing.T) {
	fr := TCP(Flow{Src: flow4.Src, Dst: flow4.Dst, VLAN: 7}, SYN)
	padded := append(append([]byte(nil), fr...), 0, 0, 0, 0)
	ip := IPPacket(padded)
	if !bytes.Equal(ip, fr[18:]) {
		t.Errorf("IPPacket = % x, want the 40 bytes after the tag, without padding", ip)
	}
	ip6 := IPPacket(UDP(flow6))
	if len(ip6) != 48 || ip6[0]>>4 != 6 {
		t.Errorf("IPv6 packet of %d bytes, version %d", len(ip6), ip6[0]>>4)
	}
	defer func() {
		if recover() == nil {
			t.Error("IPPacket of an ARP frame did not panic")
		}
	}()
	IPPacket(Serialize(t, &layers.Ethernet{SrcMAC: DefaultSrcMAC, DstMAC: DefaultDstMAC, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			SourceHwAddress: DefaultSrcMAC, SourceProtAddress: []byte{1, 2, 3, 4}, DstHwAddress: DefaultDstMAC, DstProtAddress: []byte{1, 2, 3, 5}}))
}

func TestEncapConstructors(t *testing.T) {
	inner4 := IPPacket(TCP(flow4, SYN))
	inner6 := IPPacket(TCP(flow6, SYN))

	gue := GUE(Flow{Src: tunnel4.Src, Dst: netip.AddrPortFrom(tunnel4.Dst.Addr(), 0)}, inner4)
	if port := binary.BigEndian.Uint16(gue[34+2:]); port != DefaultGUEPort {
		t.Errorf("GUE destination port %d, want the default %d", port, DefaultGUEPort)
	}
	if !bytes.Equal(gue[42:], inner4) {
		t.Errorf("GUE payload is not the inner packet")
	}
	for _, tc := range []struct {
		name  string
		outer Flow
		inner []byte
		proto byte
		off   int // of the outer protocol / next header byte
	}{
		{"IPIP", tunnel4, inner4, 4, 14 + 9},
		{"IPv6 in IPv4", tunnel4, inner6, 41, 14 + 9},
		{"IP6IP6", tunnel6, inner6, 41, 14 + 6},
		{"IPv4 in IPv6", tunnel6, inner4, 4, 14 + 6},
	} {
		fr := IPIP(tc.outer, tc.inner)
		if fr[tc.off] != tc.proto {
			t.Errorf("%s: outer protocol %d, want %d", tc.name, fr[tc.off], tc.proto)
		}
		if !bytes.HasSuffix(fr, tc.inner) {
			t.Errorf("%s: frame does not end with the inner packet", tc.name)
		}
	}
}

// TestSerializeSetsPseudoHeader builds a tunnelled TCP segment without
// calling SetNetworkLayerForChecksum: Serialize must pick the inner IPv4.
func TestSerializeSetsPseudoHeader(t *testing.T) {
	outer := tunnel6.Headers(layers.IPProtocolIPv4)
	inner := &layers.IPv4{Version: 4, TTL: 5, Protocol: layers.IPProtocolTCP,
		SrcIP: flow4.Src.Addr().AsSlice(), DstIP: flow4.Dst.Addr().AsSlice()}
	tcp := &layers.TCP{SrcPort: 1, DstPort: 2, SYN: true, Window: 10}
	fr := Serialize(t, append(outer, inner, tcp, gopacket.Payload("data"))...)
	if errs := Checksums(Decode(fr)); len(errs) != 0 {
		t.Errorf("checksums: %v", errs)
	}
}

func TestSerializeReportsErrors(t *testing.T) {
	r := &recorder{}
	Serialize(r, &layers.Ethernet{EthernetType: layers.EthernetTypeIPv4}) // no MACs
	if !r.fatal || !strings.Contains(r.errors[0], "Ethernet") {
		t.Errorf("reported %v", r.errors)
	}
}
