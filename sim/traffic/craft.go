package traffic

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"

	"github.com/sluice-dp/sluice/internal/pkttest"
)

// ErrInvalidSpec marks a FlowSpec, HTTPSpec or request that was rejected
// before any traffic was built or sent; the message names the field and
// what was expected.
var ErrInvalidSpec = errors.New("invalid traffic spec")

// Kind is the kind of packet a crafted flow consists of.
type Kind string

// The kinds of crafted flows. They are the packets a load balancer treats
// differently: a SYN opens a connection, an ACK belongs to one that may
// already be tracked, UDP has no connection at all, and ICMP echo has an
// identifier instead of ports.
const (
	KindTCPSYN   Kind = "tcp-syn"
	KindTCPACK   Kind = "tcp-ack"
	KindUDP      Kind = "udp"
	KindICMPEcho Kind = "icmp-echo"
)

// Defaults of FlowSpec fields left zero.
const (
	// DefaultSrcPortLow and DefaultSrcPortHigh bound the source ports
	// when FlowSpec.SrcPorts is zero: every non-privileged port, wider
	// than any OS's ephemeral range, so that flows spread as far as the
	// port space allows.
	DefaultSrcPortLow  = 1024
	DefaultSrcPortHigh = 65535
	// DefaultTTL is the IPv4 TTL / IPv6 hop limit when FlowSpec.TTL is 0,
	// Linux's own default.
	DefaultTTL = 64
)

// maxCraftedPackets bounds Flows × PacketsPerFlow: every frame is held in
// memory, and a typo of a few extra zeros should be an error, not an
// out-of-memory kill.
const maxCraftedPackets = 1 << 24

// maxHostBits bounds how much of a huge (IPv6) source prefix is used. 2^40
// addresses times 2^16 ports is far more flows than fit in memory, and the
// bound keeps the arithmetic in 64 bits.
const maxHostBits = 40

// FlowSpec describes a set of crafted flows from many clients to one
// destination, the scenario's "crafted traffic".
type FlowSpec struct {
	// Kind is the kind of every packet.
	Kind Kind
	// Src is the prefix the client addresses are taken from; a /32 or
	// /128 means one address. In prefixes of more than two IPv4
	// addresses the network and broadcast addresses are not used, nor the
	// all-zero (subnet-router anycast) address of IPv6 prefixes longer
	// than two addresses: a router may treat packets from them
	// differently.
	Src netip.Prefix
	// SrcPorts is the inclusive range of source ports, or of ICMP echo
	// identifiers for KindICMPEcho. Zero means DefaultSrcPortLow to
	// DefaultSrcPortHigh.
	SrcPorts [2]uint16
	// Dst is the destination. Its port is ignored for KindICMPEcho.
	Dst netip.AddrPort
	// Flows is the number of distinct flows, at least 1.
	Flows int
	// PacketsPerFlow is how many packets each flow has; 0 means 1.
	PacketsPerFlow int
	// Payload is the number of payload bytes per packet, after the
	// transport (or ICMP echo) header.
	Payload int
	// DF sets IPv4's don't-fragment bit. IPv6 has no such bit (routers
	// never fragment it), so it is ignored there.
	DF bool
	// VLAN tags every frame with this 802.1Q VLAN ID; 0 means untagged.
	VLAN uint16
	// TTL is the IPv4 TTL or IPv6 hop limit; 0 means DefaultTTL.
	TTL uint8
	// Seed chooses the source address and port of each flow. The same
	// spec with the same seed gives the same frames, so that a scenario
	// run twice (or on two LB nodes) sends the same flows.
	Seed uint64
}

// Flow is the 5-tuple of a crafted flow. For ICMP echo the source port is
// the echo identifier, which is what tells echo flows apart (Linux's
// conntrack and load balancers key them on it), and the destination port
// is 0.
type Flow struct {
	Src, Dst netip.AddrPort
	// Proto is the IP protocol number: 6 (TCP), 17 (UDP), 1 (ICMP) or
	// 58 (ICMPv6).
	Proto uint8
}

// String reads like "tcp 10.0.0.2:40000 -> 192.0.2.10:80".
func (f Flow) String() string {
	name := strconv.Itoa(int(f.Proto))
	switch f.Proto {
	case 1:
		name = "icmp"
	case 6:
		name = "tcp"
	case 17:
		name = "udp"
	case 58:
		name = "icmpv6"
	}
	return fmt.Sprintf("%s %v -> %v", name, f.Src, f.Dst)
}

// Craft builds the frames of spec's flows, from srcMAC to dstMAC (the MAC
// of the interface the frames are injected at and of its next hop, which
// would otherwise drop them as not addressed to it). It returns the flows
// and the frames in flow order, a flow's packets consecutive. No two flows
// share a 5-tuple. Every checksum is complete.
//
// TCP packets have sequence number 1 (an ACK also acknowledges 1), as
// pkttest builds them; the packets of one flow differ in their IPv4
// identification and their payload, which names the flow and the packet
// ("sluice f3 p0 ...") so that a capture can be read by eye.
func Craft(spec FlowSpec, srcMAC, dstMAC net.HardwareAddr) ([]Flow, [][]byte, error) {
	s, err := spec.normalize()
	if err != nil {
		return nil, nil, err
	}
	for _, m := range []struct {
		name string
		mac  net.HardwareAddr
	}{{"source", srcMAC}, {"destination", dstMAC}} {
		if len(m.mac) != 6 {
			return nil, nil, fmt.Errorf("%w: %s mac %q: want 6 bytes", ErrInvalidSpec, m.name, m.mac)
		}
	}

	hosts := hostSpace(s.Src)
	ports := uint64(s.SrcPorts[1]) - uint64(s.SrcPorts[0]) + 1
	rng := rand.New(rand.NewPCG(s.Seed, 0x736c756963652d66)) // "sluice-f"
	picks := sample(rng, hosts.count*ports, s.Flows)

	is6 := s.Dst.Addr().Is6()
	proto := s.Kind.proto(is6)
	flows := make([]Flow, len(picks))
	frames := make([][]byte, 0, len(picks)*s.PacketsPerFlow)
	for i, idx := range picks {
		src := netip.AddrPortFrom(hosts.at(idx/ports), s.SrcPorts[0]+uint16(idx%ports))
		dst := s.Dst
		if s.Kind == KindICMPEcho {
			dst = netip.AddrPortFrom(dst.Addr(), 0)
		}
		flows[i] = Flow{Src: src, Dst: dst, Proto: proto}
		for p := range s.PacketsPerFlow {
			f := pkttest.Flow{
				SrcMAC:  srcMAC,
				DstMAC:  dstMAC,
				VLAN:    s.VLAN,
				Src:     src,
				Dst:     dst,
				TTL:     s.TTL,
				DF:      s.DF && !is6,
				ID:      uint16(len(frames) + 1),
				Payload: payload(i, p, s.Payload),
			}
			var fr []byte
			switch s.Kind {
			case KindTCPSYN:
				fr = pkttest.TCP(f, pkttest.SYN)
			case KindTCPACK:
				fr = pkttest.TCP(f, pkttest.ACK)
			case KindUDP:
				fr = pkttest.UDP(f)
			case KindICMPEcho:
				fr = pkttest.ICMPEcho(f, src.Port(), uint16(p+1))
			}
			frames = append(frames, fr)
		}
	}
	return flows, frames, nil
}

// proto returns the IP protocol number of the kind's packets.
func (k Kind) proto(is6 bool) uint8 {
	switch k {
	case KindTCPSYN, KindTCPACK:
		return 6
	case KindUDP:
		return 17
	}
	if is6 {
		return 58
	}
	return 1
}

// headerLen is the transport (or ICMP echo) header's length.
func (k Kind) headerLen() int {
	switch k {
	case KindTCPSYN, KindTCPACK:
		return 20
	}
	return 8
}

// normalize checks spec and returns it with its defaults filled in.
func (spec FlowSpec) normalize() (FlowSpec, error) {
	s := spec
	bad := func(field, format string, args ...any) (FlowSpec, error) {
		return FlowSpec{}, fmt.Errorf("%w: %s: %s", ErrInvalidSpec, field, fmt.Sprintf(format, args...))
	}
	switch s.Kind {
	case KindTCPSYN, KindTCPACK, KindUDP, KindICMPEcho:
	default:
		return bad("Kind", "%q is not one of %q, %q, %q, %q", s.Kind, KindTCPSYN, KindTCPACK, KindUDP, KindICMPEcho)
	}
	if !s.Src.IsValid() {
		return bad("Src", "missing or invalid prefix")
	}
	if !s.Dst.IsValid() {
		return bad("Dst", "missing or invalid address")
	}
	src, dst := s.Src.Addr(), s.Dst.Addr()
	if src.Is4In6() || dst.Is4In6() {
		return bad("Src/Dst", "IPv4-mapped IPv6 address in %v -> %v: write IPv4 addresses as IPv4", s.Src, s.Dst)
	}
	if src.Zone() != "" || dst.Zone() != "" {
		return bad("Src/Dst", "zoned address in %v -> %v: a frame carries no zone", s.Src, s.Dst)
	}
	if src.Is4() != dst.Is4() {
		return bad("Src/Dst", "mixed address families: %v -> %v", s.Src, s.Dst)
	}
	if dst.IsUnspecified() || dst.IsMulticast() {
		return bad("Dst", "%v is not a unicast address", dst)
	}
	if s.Kind != KindICMPEcho && s.Dst.Port() == 0 {
		return bad("Dst", "%v: %s needs a destination port", s.Dst, s.Kind)
	}
	s.Src = s.Src.Masked()
	if s.SrcPorts == [2]uint16{} {
		s.SrcPorts = [2]uint16{DefaultSrcPortLow, DefaultSrcPortHigh}
	}
	if s.SrcPorts[0] == 0 || s.SrcPorts[0] > s.SrcPorts[1] {
		return bad("SrcPorts", "%d-%d: want an inclusive range low-high with 1 <= low <= high", s.SrcPorts[0], s.SrcPorts[1])
	}
	if s.Flows < 1 {
		return bad("Flows", "%d: want at least 1", s.Flows)
	}
	if s.PacketsPerFlow == 0 {
		s.PacketsPerFlow = 1
	}
	if s.PacketsPerFlow < 0 {
		return bad("PacketsPerFlow", "%d: want at least 1 (0 means 1)", s.PacketsPerFlow)
	}
	if s.Flows > maxCraftedPackets/s.PacketsPerFlow {
		return bad("Flows", "%d flows × %d packets: more than %d packets", s.Flows, s.PacketsPerFlow, maxCraftedPackets)
	}
	ipHeader := 20
	if dst.Is6() {
		ipHeader = 0 // the IPv6 payload length excludes the fixed header
	}
	if maxPayload := 65535 - ipHeader - s.Kind.headerLen(); s.Payload < 0 || s.Payload > maxPayload {
		return bad("Payload", "%d bytes: want 0 to %d, the most an IP packet can carry", s.Payload, maxPayload)
	}
	if s.VLAN > 4094 {
		return bad("VLAN", "%d: want a VLAN ID 1-4094, or 0 for untagged", s.VLAN)
	}
	if s.TTL == 0 {
		s.TTL = DefaultTTL
	}
	hosts := hostSpace(s.Src)
	ports := uint64(s.SrcPorts[1]) - uint64(s.SrcPorts[0]) + 1
	if capacity := hosts.count * ports; uint64(s.Flows) > capacity {
		return bad("Flows", "%d distinct flows do not fit in %d source addresses of %v × %d ports (%d-%d): at most %d",
			s.Flows, hosts.count, s.Src, ports, s.SrcPorts[0], s.SrcPorts[1], capacity)
	}
	return s, nil
}

// hosts is the set of usable source addresses of a prefix: count addresses
// starting at first.
type hosts struct {
	first netip.Addr
	count uint64
}

// hostSpace returns the addresses of p a client may use; see FlowSpec.Src.
func hostSpace(p netip.Prefix) hosts {
	bits := p.Addr().BitLen() - p.Bits()
	if bits == 0 {
		return hosts{first: p.Addr(), count: 1}
	}
	if bits == 1 {
		// A /31 or /127 is a point-to-point pair: both are hosts
		// (RFC 3021, RFC 6164).
		return hosts{first: p.Addr(), count: 2}
	}
	h := hosts{first: p.Addr().Next()} // skip the network / anycast address
	switch {
	case bits > maxHostBits:
		h.count = 1 << maxHostBits
	case p.Addr().Is4():
		h.count = 1<<bits - 2 // and the broadcast address
	default:
		h.count = 1<<bits - 1
	}
	return h
}

// at returns the i-th usable address, i < h.count. The offset never
// carries past the prefix's host bits, so adding it to the low 64 bits is
// enough.
func (h hosts) at(i uint64) netip.Addr {
	if h.first.Is4() {
		b := h.first.As4()
		binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(b[:])+uint32(i))
		return netip.AddrFrom4(b)
	}
	b := h.first.As16()
	binary.BigEndian.PutUint64(b[8:], binary.BigEndian.Uint64(b[8:])+i)
	return netip.AddrFrom16(b)
}

// sample returns k distinct numbers below n (k <= n) in a random order
// drawn from rng. It is Floyd's algorithm, whose cost depends on k only,
// so that picking 10,000 flows from 2^56 (address, port) pairs is as cheap
// as from 10,001; the result is shuffled because Floyd's insertion order
// is not uniformly random.
func sample(rng *rand.Rand, n uint64, k int) []uint64 {
	seen := make(map[uint64]struct{}, k)
	out := make([]uint64, 0, k)
	for j := n - uint64(k); j < n; j++ {
		v := rng.Uint64N(j + 1)
		if _, dup := seen[v]; dup {
			v = j
		}
		seen[v] = struct{}{}
		out = append(out, v)
	}
	rng.Shuffle(len(out), func(a, b int) { out[a], out[b] = out[b], out[a] })
	return out
}

// payload returns n bytes naming flow f and packet p, repeated: distinct
// per packet, and legible in a hex dump.
func payload(f, p, n int) []byte {
	if n == 0 {
		return nil
	}
	unit := fmt.Sprintf("sluice f%d p%d ", f, p)
	b := make([]byte, n)
	for i := 0; i < n; i += copy(b[i:], unit) {
	}
	return b
}
