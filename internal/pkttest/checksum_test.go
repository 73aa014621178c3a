package pkttest

import (
	"net/netip"
	"strings"
	"testing"
)

func TestChecksum(t *testing.T) {
	cases := []struct {
		name string
		data [][]byte
		want uint16
	}{
		// RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to
		// 2ddf0, which folds to ddf2; the checksum is its complement.
		{"RFC 1071 example", [][]byte{{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}}, 0x220d},
		// The same bytes split at odd offsets must give the same result:
		// pseudo-headers and segments are passed as separate pieces.
		{"RFC 1071 example, odd split", [][]byte{{0x00, 0x01, 0xf2}, {0x03}, {}, {0xf4, 0xf5, 0xf6, 0xf7}}, 0x220d},
		// The IPv4 header used as the worked example in many texts:
		// 4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7, checksum
		// field zeroed here, so the result is the value that belongs there.
		{"IPv4 header", [][]byte{{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}}, 0xb861},
		// With the right checksum in place the sum is ffff, so 0.
		{"IPv4 header, verified", [][]byte{{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}}, 0x0000},
		{"empty", nil, 0xffff},
		// An odd last byte is the high half of a word: 0x0100.
		{"single byte", [][]byte{{0x01}}, 0xfeff},
		// 8000 + 8000 = 10000, end-around carry gives 0001.
		{"carry", [][]byte{{0x80, 0x00, 0x80, 0x00}}, 0xfffe},
		// ffff + ffff = 1fffe, folds to ffff (negative zero), checksum 0.
		{"all ones", [][]byte{{0xff, 0xff, 0xff, 0xff}}, 0x0000},
		// 16 * ffff: the carries must be folded more than once.
		{"many carries", [][]byte{[]byte(strings.Repeat("\xff", 32))}, 0x0000},
	}
	for _, tc := range cases {
		if got := Checksum(tc.data...); got != tc.want {
			t.Errorf("%s: Checksum = %#04x, want %#04x", tc.name, got, tc.want)
		}
	}
}

// validFrames are frames gopacket built with its own checksum code; that
// Checksums accepts them all cross-checks the two implementations.
func validFrames() map[string][]byte {
	inner4 := IPPacket(TCP(flow4, SYN))
	inner6 := IPPacket(UDP(Flow{Src: flow6.Src, Dst: flow6.Dst, Payload: []byte("odd")}))
	return map[string][]byte{
		"TCP4":              TCP(Flow{Src: flow4.Src, Dst: flow4.Dst, Payload: []byte("hello")}, PSH|ACK),
		"TCP6":              TCP(flow6, SYN),
		"UDP4 odd payload":  UDP(Flow{Src: flow4.Src, Dst: flow4.Dst, Payload: []byte("abc")}),
		"UDP6":              UDP(flow6),
		"ICMP echo":         ICMPEcho(Flow{Src: flow4.Src, Dst: flow4.Dst, Payload: []byte("ping")}, 7, 1),
		"ICMPv6 echo":       ICMPEcho(Flow{Src: flow6.Src, Dst: flow6.Dst, Payload: []byte("ping")}, 7, 1),
		"ICMPv6 echo reply": ICMPEchoReply(flow6, 7, 1),
		"VLAN TCP4":         TCP(Flow{Src: flow4.Src, Dst: flow4.Dst, VLAN: 100}, SYN),
		"GUE4 TCP4":         GUE(tunnel4, inner4),
		"GUE6 UDP6":         GUE(tunnel6, inner6),
		"GUE6 TCP4":         GUE(tunnel6, inner4),
		"IPIP":              IPIP(Flow{Src: tunnel4.Src, Dst: tunnel4.Dst}, inner4),
		"IP6IP6":            IPIP(Flow{Src: tunnel6.Src, Dst: tunnel6.Dst}, inner6),
		"IPv4 in IPv6":      IPIP(Flow{Src: tunnel6.Src, Dst: tunnel6.Dst}, inner4),
		"TCP4 with padding": append(TCP(flow4, ACK), 0, 0, 0, 0, 0, 0), // padding is outside every checksum
	}
}

func TestChecksumsAcceptValid(t *testing.T) {
	for name, fr := range validFrames() {
		if errs := Checksums(Decode(fr)); len(errs) != 0 {
			t.Errorf("%s: %v", name, errs)
		}
	}
}

// TestChecksumsCatchFlips corrupts one byte of each checksummed region and
// expects exactly the checksum covering it to be reported.
func TestChecksumsCatchFlips(t *testing.T) {
	gue4 := GUE(tunnel4, IPPacket(TCP(flow4, SYN)))
	cases := []struct {
		name  string
		frame []byte
		off   int    // byte to flip
		want  string // what the single error must mention
	}{
		{"IPv4 header TTL", TCP(flow4, SYN), 14 + 8, "IPv4 (layer 2): header checksum"},
		{"TCP4 window", TCP(flow4, SYN), 34 + 14, "TCP (layer 3): checksum"},
		{"TCP4 payload", TCP(Flow{Src: flow4.Src, Dst: flow4.Dst, Payload: []byte("xyz")}, ACK), 34 + 20 + 2, "TCP (layer 3): checksum"},
		{"TCP6 port", TCP(flow6, SYN), 54 + 1, "TCP (layer 3): checksum"},
		// A pseudo-header field: IPv6 has no header checksum, so only the
		// TCP checksum can notice a changed address.
		{"TCP6 source address", TCP(flow6, SYN), 14 + 8 + 15, "TCP (layer 3): checksum"},
		{"UDP4 payload", UDP(Flow{Src: flow4.Src, Dst: flow4.Dst, Payload: []byte("abc")}), 42 + 2, "UDP (layer 3): checksum"},
		{"UDP6 port", UDP(flow6), 54, "UDP (layer 3): checksum"},
		{"ICMP id", ICMPEcho(flow4, 7, 1), 34 + 5, "ICMPv4 (layer 3): checksum"},
		{"ICMPv6 seq", ICMPEcho(flow6, 7, 1), 54 + 7, "ICMPv6 (layer 3): checksum"},
		// Inside GUE: the outer UDP checksum covers the inner packet, so
		// a flip there is reported both outside and inside.
		{"GUE outer IPv4", gue4, 14 + 8, "IPv4 (layer 2): header checksum"},
		{"GUE outer UDP port", gue4, 34 + 1, "UDP (layer 3): checksum"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fr := append([]byte(nil), tc.frame...)
			fr[tc.off] ^= 0x01
			errs := Checksums(Decode(fr))
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.want) {
				t.Fatalf("flip at %d: errors %v, want one mentioning %q", tc.off, errs, tc.want)
			}
		})
	}
	t.Run("GUE inner TCP", func(t *testing.T) {
		fr := append([]byte(nil), gue4...)
		fr[42+20+14] ^= 0x01 // inner TCP window
		errs := Checksums(Decode(fr))
		if len(errs) != 2 {
			t.Fatalf("errors %v, want the outer UDP and the inner TCP checksum", errs)
		}
		if !strings.Contains(errs[0].Error(), "UDP (layer 3): checksum") ||
			!strings.Contains(errs[1].Error(), "GUE/TCP (layer 2): checksum") {
			t.Errorf("errors %v", errs)
		}
	})
	t.Run("IPIP inner IPv4", func(t *testing.T) {
		fr := IPIP(Flow{Src: tunnel4.Src, Dst: tunnel4.Dst}, IPPacket(TCP(flow4, SYN)))
		fr[34+8] ^= 0x01 // inner TTL
		errs := Checksums(Decode(fr))
		if len(errs) != 1 || !strings.Contains(errs[0].Error(), "IPv4 (layer 3): header checksum") {
			t.Errorf("errors %v, want the inner IPv4 header checksum", errs)
		}
	})
}

// TestChecksumsWantValue checks the value an error proposes against one
// computed by hand from the frame.
func TestChecksumsWantValue(t *testing.T) {
	fr := TCP(flow4, SYN)
	good := uint16(fr[24])<<8 | uint16(fr[25])
	fr[24], fr[25] = 0x12, 0x34
	errs := Checksums(Decode(fr))
	want := "header checksum 0x1234, want " + hex16(good)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), want) {
		t.Errorf("errors %v, want one containing %q", errs, want)
	}
}

func hex16(v uint16) string {
	const digits = "0123456789abcdef"
	return "0x" + string([]byte{digits[v>>12], digits[v>>8&15], digits[v>>4&15], digits[v&15]})
}

func TestChecksumsUDPZero(t *testing.T) {
	zero := func(fr []byte, off int) []byte {
		fr[off], fr[off+1] = 0, 0
		return fr
	}
	// Over IPv4, 0 means "no checksum" and is fine.
	if errs := Checksums(Decode(zero(UDP(flow4), 34+6))); len(errs) != 0 {
		t.Errorf("UDP over IPv4 without checksum: %v", errs)
	}
	// Over IPv6 it is not, and GUE's outer header is no exception.
	errs := Checksums(Decode(zero(GUE(tunnel6, IPPacket(TCP(flow4, SYN))), 54+6)))
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "checksum 0 (none) over IPv6") {
		t.Errorf("UDP over IPv6 without checksum: errors %v", errs)
	}
}

func TestChecksumsUDPLength(t *testing.T) {
	fr := UDP(Flow{Src: flow4.Src, Dst: flow4.Dst, Payload: []byte("abcd")})
	fr[34+5] += 2 // UDP length claims 2 bytes more than the IP packet holds
	errs := Checksums(Decode(fr))
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "truncated") {
		t.Errorf("errors %v, want one saying the packet is truncated", errs)
	}
}

func TestChecksumsTruncated(t *testing.T) {
	fr := TCP(flow4, SYN)
	errs := Checksums(Decode(fr[:len(fr)-4]))
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "truncated") {
		t.Errorf("errors %v, want one saying the packet is truncated", errs)
	}
}

func TestVerifyChecksums(t *testing.T) {
	fr := TCP(flow4, SYN)
	r := &recorder{}
	VerifyChecksums(r, Decode(fr))
	if len(r.errors) != 0 {
		t.Fatalf("valid frame: %v", r.errors)
	}
	fr[34+16] ^= 0xff
	VerifyChecksums(r, Decode(fr))
	if len(r.errors) != 1 || !strings.Contains(r.errors[0], "TCP") {
		t.Errorf("corrupt TCP checksum: reported %v", r.errors)
	}
}

// TestChecksumsUndecodablePayload sends UDP to port 53 with payloads that
// are not DNS: gopacket fails to decode them (and calls the ones shorter
// than a DNS header truncated), which must not count as a checksum error,
// while a flipped payload byte still must.
func TestChecksumsUndecodablePayload(t *testing.T) {
	for _, tc := range []struct {
		name string
		flow Flow
	}{
		{"IPv4 short", Flow{Src: flow4.Src, Dst: netip.AddrPortFrom(flow4.Dst.Addr(), 53), Payload: []byte("not dns")}},
		{"IPv4 long", Flow{Src: flow4.Src, Dst: netip.AddrPortFrom(flow4.Dst.Addr(), 53), Payload: []byte("sluice udp #1234: not a DNS message")}},
		{"IPv6 short", Flow{Src: flow6.Src, Dst: netip.AddrPortFrom(flow6.Dst.Addr(), 53), Payload: []byte("x")}},
		{"IPv6 empty", Flow{Src: flow6.Src, Dst: netip.AddrPortFrom(flow6.Dst.Addr(), 53)}},
	} {
		fr := UDP(tc.flow)
		pkt := Decode(fr)
		if pkt.ErrorLayer() == nil && len(tc.flow.Payload) > 0 {
			t.Errorf("%s: gopacket decoded the payload as %v; the case tests nothing", tc.name, pkt.Layers())
		}
		if errs := Checksums(pkt); len(errs) != 0 {
			t.Errorf("%s, correct checksum: %v", tc.name, errs)
		}
		if len(tc.flow.Payload) == 0 {
			continue
		}
		fr[len(fr)-1] ^= 0x40
		errs := Checksums(Decode(fr))
		if len(errs) != 1 || !strings.Contains(errs[0].Error(), "UDP") || !strings.Contains(errs[0].Error(), "checksum") {
			t.Errorf("%s, payload byte flipped: errors %v, want one UDP checksum error", tc.name, errs)
		}
	}
}

// TestChecksumsUndecodablePayloadInGUE is the same inside a GUE tunnel,
// where the inner packet is decoded separately.
func TestChecksumsUndecodablePayloadInGUE(t *testing.T) {
	inner := IPPacket(UDP(Flow{Src: flow4.Src, Dst: netip.AddrPortFrom(flow4.Dst.Addr(), 53), Payload: []byte("sluice f3 p0 not dns at all")}))
	fr := GUE(tunnel4, inner)
	if errs := Checksums(Decode(fr)); len(errs) != 0 {
		t.Errorf("correct checksums: %v", errs)
	}
	if p, err := InnerPacket(Decode(fr), DefaultGUEPort); p == nil || err != nil {
		t.Errorf("InnerPacket: %v, %v; want the inner packet without error", p, err)
	}
	// The flip goes into the inner payload, covered by the inner UDP
	// checksum and by the outer one.
	fr[len(fr)-1] ^= 0x40
	errs := Checksums(Decode(fr))
	if len(errs) != 2 || !strings.Contains(errs[0].Error(), "UDP") || !strings.Contains(errs[1].Error(), "GUE/UDP") {
		t.Errorf("payload byte flipped: errors %v, want the outer and the inner UDP checksum reported", errs)
	}
}
