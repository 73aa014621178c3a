package pkttest

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Checksum returns the Internet checksum (RFC 1071) of the concatenation of
// data: the ones' complement of the ones' complement sum of its 16-bit
// big-endian words, an odd final byte padded with zero. The pieces are
// summed as one byte stream, so a pseudo-header and a segment can be passed
// separately even when a piece has odd length.
//
// Over data whose checksum field holds a correct value the result is 0,
// which is how Checksums verifies. It is written here rather than taken
// from gopacket so that the verification does not share code, and so
// mistakes, with the frames gopacket builds.
func Checksum(data ...[]byte) uint16 {
	var sum uint64
	high := true // the next byte is the high-order byte of a word
	for _, d := range data {
		for _, c := range d {
			if high {
				sum += uint64(c) << 8
			} else {
				sum += uint64(c)
			}
			high = !high
		}
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// VerifyChecksums reports, with t.Errorf, every checksum in pkt that is
// wrong; see Checksums.
func VerifyChecksums(t testing.TB, pkt gopacket.Packet, opts ...Option) {
	t.Helper()
	for _, err := range Checksums(pkt, opts...) {
		t.Errorf("%v", err)
	}
}

// Checksums recomputes every checksum in pkt from the raw bytes and returns
// one error per wrong one: IPv4 header checksums, TCP and UDP over IPv4 and
// IPv6 (pseudo-header included), ICMPv4, and ICMPv6 (pseudo-header
// included). A UDP checksum of 0 means "none" over IPv4 and is accepted;
// over IPv6 it is an error, as RFC 8200 requires one and Linux drops such
// packets. Packets inside tunnels are checked too: IP-in-IP layers are part
// of pkt already, and the payload of UDP to the GUE port (see GUEPort) is
// decoded and checked, after the outer UDP checksum, which covers it, has
// been checked as a whole.
//
// gopacket is used only to find where each header starts; fragments are
// skipped because their transport checksum covers bytes they do not hold.
// Whether gopacket could make sense of the application payload does not
// matter: a UDP datagram to port 53 that is not DNS, or one too short to
// be, is judged by its checksum like any other, and only headers up to the
// transport header that state more bytes than are present make a packet
// truncated.
func Checksums(pkt gopacket.Packet, opts ...Option) []error {
	return checksums(pkt, collect(opts).guePort, "", 0)
}

// maxTunnelDepth bounds the GUE recursion so that a crafted packet that
// nests GUE in GUE cannot make verification recurse without end.
const maxTunnelDepth = 4

func checksums(pkt gopacket.Packet, guePort uint16, where string, depth int) []error {
	var errs []error
	fail := func(i int, l gopacket.Layer, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s%v (layer %d): %s", where, l.LayerType(), i+1, fmt.Sprintf(format, args...)))
	}
	// In a truncated packet only IPv4 header checksums can be verified: the
	// others cover bytes that are missing, and reporting them would bury
	// the real problem.
	truncated := truncatedHeaders(pkt)
	if truncated {
		errs = append(errs, fmt.Errorf("%spacket is truncated: a header states more bytes than are present", where))
	}
	var ip gopacket.Layer // the IP header the next transport header belongs to
	for i, l := range pkt.Layers() {
		switch l := l.(type) {
		case *layers.IPv4:
			ip = l
			if Checksum(l.Contents) != 0 {
				fail(i, l, "header checksum %#04x, want %#04x", l.Checksum, expected(l.Contents, 10))
			}
		case *layers.IPv6:
			ip = l
		}
		if truncated {
			continue
		}
		switch l := l.(type) {
		case *layers.TCP:
			seg := concat(l.Contents, l.Payload)
			if ph, err := pseudoHeader(ip, layers.IPProtocolTCP, len(seg)); err != nil {
				fail(i, l, "%v", err)
			} else if Checksum(ph, seg) != 0 {
				fail(i, l, "checksum %#04x, want %#04x", l.Checksum, expected(seg, 16, ph))
			}
		case *layers.UDP:
			seg := concat(l.Contents, l.Payload)
			ph, err := pseudoHeader(ip, layers.IPProtocolUDP, len(seg))
			switch {
			case err != nil:
				fail(i, l, "%v", err)
			case l.Checksum == 0:
				if _, v6 := ip.(*layers.IPv6); v6 {
					fail(i, l, "checksum 0 (none) over IPv6, want %#04x", udpExpected(seg, ph))
				}
			case Checksum(ph, seg) != 0:
				fail(i, l, "checksum %#04x, want %#04x", l.Checksum, udpExpected(seg, ph))
			}
		case *layers.ICMPv4:
			msg := concat(l.Contents, l.Payload)
			if Checksum(msg) != 0 {
				fail(i, l, "checksum %#04x, want %#04x", l.Checksum, expected(msg, 2))
			}
		case *layers.ICMPv6:
			msg := concat(l.Contents, l.Payload)
			if ph, err := pseudoHeader(ip, layers.IPProtocolICMPv6, len(msg)); err != nil {
				fail(i, l, "%v", err)
			} else if Checksum(ph, msg) != 0 {
				fail(i, l, "checksum %#04x, want %#04x", l.Checksum, expected(msg, 2, ph))
			}
		}
	}
	if depth < maxTunnelDepth {
		if b, kind, err := tunnelled(pkt, guePort); err == nil && kind == "GUE" {
			if inner, err := decodeIP(b); inner != nil && err == nil {
				errs = append(errs, checksums(inner, guePort, where+"GUE/", depth+1)...)
			} else if err != nil {
				errs = append(errs, fmt.Errorf("%sGUE payload: %w", where, err))
			}
		}
	}
	return errs
}

// truncatedHeaders reports whether an IP, IPv6 extension or transport
// header of pkt is cut short or states more bytes than follow it: then the
// checksums that cover those bytes cannot be verified. gopacket's own
// Truncated flag is not enough, because it is also set when a layer above
// the transport (DNS on port 53, say) finds the payload too short for its
// format, which says nothing about the packet's checksums.
func truncatedHeaders(pkt gopacket.Packet) bool {
	if !pkt.Metadata().Truncated {
		return false // gopacket noticed nothing, at no layer
	}
	ls := pkt.Layers()
	for i, l := range ls {
		switch l := l.(type) {
		case *layers.IPv4:
			if int(l.Length) > len(l.Contents)+len(l.Payload) {
				return true
			}
		case *layers.IPv6:
			// Length 0 is a jumbogram, whose length is in an option.
			if l.Length != 0 && int(l.Length) > len(l.Payload) {
				return true
			}
		case *layers.UDP:
			if int(l.Length) > len(l.Contents)+len(l.Payload) {
				return true
			}
		case *gopacket.DecodeFailure:
			// A header that could not be decoded at all counts when it
			// is the network or transport header, not when it is the
			// application payload of a transport.
			if !afterTransport(ls, i) {
				return true
			}
		}
	}
	return false
}

// afterTransport reports whether layer i of ls follows a transport (or
// ICMP) header that was decoded, so that it is application payload rather
// than a header Checksums verifies. gopacket leaves an empty TCP layer
// before the failure when a TCP header is cut short: that one does not
// count.
func afterTransport(ls []gopacket.Layer, i int) bool {
	if i == 0 || len(ls[i-1].LayerContents()) == 0 {
		return false
	}
	switch ls[i-1].(type) {
	case *layers.TCP, *layers.UDP, *layers.ICMPv4, *layers.ICMPv6:
		return true
	}
	return false
}

// pseudoHeader builds the header that TCP, UDP and ICMPv6 checksums cover
// besides the segment itself (RFC 793/768 for IPv4, RFC 8200 section 8.1
// for IPv6).
func pseudoHeader(ip gopacket.Layer, proto layers.IPProtocol, length int) ([]byte, error) {
	switch ip := ip.(type) {
	case *layers.IPv4:
		if proto == layers.IPProtocolICMPv6 {
			return nil, fmt.Errorf("ICMPv6 over IPv4")
		}
		ph := make([]byte, 12)
		copy(ph[0:4], ip.SrcIP.To4())
		copy(ph[4:8], ip.DstIP.To4())
		ph[9] = byte(proto)
		binary.BigEndian.PutUint16(ph[10:], uint16(length))
		return ph, nil
	case *layers.IPv6:
		ph := make([]byte, 40)
		copy(ph[0:16], ip.SrcIP.To16())
		copy(ph[16:32], ip.DstIP.To16())
		binary.BigEndian.PutUint32(ph[32:], uint32(length))
		ph[39] = byte(proto)
		return ph, nil
	}
	return nil, fmt.Errorf("no IP header before it to build the checksum's pseudo-header from")
}

// expected computes the checksum that belongs in the 16-bit field at off of
// msg, for the error message: msg is summed with that field zeroed.
func expected(msg []byte, off int, prefix ...[]byte) uint16 {
	c := append([]byte(nil), msg...)
	if len(c) >= off+2 {
		c[off], c[off+1] = 0, 0
	}
	return Checksum(append(prefix, c)...)
}

// udpExpected is expected for UDP, where a computed 0 is sent as 0xffff
// because 0 means "no checksum".
func udpExpected(seg, ph []byte) uint16 {
	if c := expected(seg, 6, ph); c != 0 {
		return c
	}
	return 0xffff
}

func concat(a, b []byte) []byte {
	return append(append(make([]byte, 0, len(a)+len(b)), a...), b...)
}
