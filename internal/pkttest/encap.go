package pkttest

import (
	"errors"
	"fmt"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// DefaultGUEPort is the UDP destination port of GUE in Sluice's wire format.
// gopacket knows GUE only on port 666, so this package decodes it itself.
const DefaultGUEPort = 6080

// ErrNotEncapsulated is returned by DecodeGUE and InnerPacket for a packet
// that carries no tunnelled IP packet.
var ErrNotEncapsulated = errors.New("not an encapsulated packet")

// DecodeGUE decodes the payload of pkt's outermost UDP layer as a GUE
// variant 1 payload, that is, as a bare IPv4 or IPv6 packet told apart by
// its first nibble. It does not look at ports; use InnerPacket for that. If
// the inner packet fails to decode, DecodeGUE returns it anyway, with the
// error, so that a test can still show what arrived.
func DecodeGUE(pkt gopacket.Packet) (gopacket.Packet, error) {
	udp, ok := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if !ok {
		return nil, fmt.Errorf("decode GUE: no UDP layer: %w", ErrNotEncapsulated)
	}
	inner, err := decodeIP(udp.Payload)
	if err != nil {
		return inner, fmt.Errorf("decode GUE: %w", err)
	}
	return inner, nil
}

// InnerPacket returns the packet tunnelled in pkt: for IP-in-IP (outer IPv4
// protocol 4 or 41, outer IPv6 next header 41 or 4, after any extension
// headers) the outer IP payload, and for GUE (outermost UDP destination
// port guePort, payload starting with IP version 4 or 6) the UDP payload.
// Tests call it on a program's output to reach what the backend will see.
func InnerPacket(pkt gopacket.Packet, guePort uint16) (gopacket.Packet, error) {
	b, kind, err := tunnelled(pkt, guePort)
	if err != nil {
		return nil, err
	}
	inner, err := decodeIP(b)
	if err != nil {
		return inner, fmt.Errorf("decode %s payload: %w", kind, err)
	}
	return inner, nil
}

// tunnelled finds the bytes of the packet inside pkt's outermost tunnel and
// names the kind of tunnel ("IP-in-IP" or "GUE").
func tunnelled(pkt gopacket.Packet, guePort uint16) ([]byte, string, error) {
	ls := pkt.Layers()
	i := 0
	for i < len(ls) && !isIP(ls[i]) {
		i++
	}
	if i == len(ls) {
		return nil, "", fmt.Errorf("no IP layer: %w", ErrNotEncapsulated)
	}
	// The protocol after the IP header chain is the first byte of the last
	// extension header, or the IP header's own protocol field.
	proto, payload := ipNext(ls[i])
	for i+1 < len(ls) && layers.LayerClassIPv6Extension.Contains(ls[i+1].LayerType()) {
		i++
		if c := ls[i].LayerContents(); len(c) > 0 {
			proto = layers.IPProtocol(c[0])
		}
		payload = ls[i].LayerPayload()
	}
	switch proto {
	case layers.IPProtocolIPv4, layers.IPProtocolIPv6:
		return payload, "IP-in-IP", nil
	case layers.IPProtocolUDP:
		if i+1 < len(ls) {
			if udp, ok := ls[i+1].(*layers.UDP); ok && uint16(udp.DstPort) == guePort &&
				len(udp.Payload) > 0 && (udp.Payload[0]>>4 == 4 || udp.Payload[0]>>4 == 6) {
				return udp.Payload, "GUE", nil
			}
		}
	}
	return nil, "", fmt.Errorf("outer IP carries %v, not IP-in-IP or GUE to port %d: %w", proto, guePort, ErrNotEncapsulated)
}

func isIP(l gopacket.Layer) bool {
	switch l.(type) {
	case *layers.IPv4, *layers.IPv6:
		return true
	}
	return false
}

// ipNext returns an IP layer's protocol field and payload.
func ipNext(l gopacket.Layer) (layers.IPProtocol, []byte) {
	switch l := l.(type) {
	case *layers.IPv4:
		return l.Protocol, l.Payload
	case *layers.IPv6:
		if l.HopByHop != nil {
			// gopacket folds hop-by-hop options into the IPv6 layer and
			// starts the payload after them.
			return l.HopByHop.NextHeader, l.Payload
		}
		return l.NextHeader, l.Payload
	}
	panic("pkttest: not an IP layer")
}

// decodeIP decodes a bare IP packet, choosing the decoder from the version
// nibble the way a GUE variant 1 receiver does.
func decodeIP(b []byte) (gopacket.Packet, error) {
	if len(b) == 0 {
		return nil, errors.New("empty inner packet")
	}
	var first gopacket.LayerType
	switch b[0] >> 4 {
	case 4:
		first = layers.LayerTypeIPv4
	case 6:
		first = layers.LayerTypeIPv6
	default:
		return nil, fmt.Errorf("inner packet starts with IP version %d, not 4 or 6", b[0]>>4)
	}
	inner := gopacket.NewPacket(b, first, gopacket.Default)
	if err := headerError(inner); err != nil {
		return inner, fmt.Errorf("inner packet: %w", err)
	}
	return inner, nil
}

// headerError returns gopacket's decoding error of pkt when it is about a
// network or transport header. A payload that gopacket fails to decode as
// an application protocol (DNS on port 53 that is not DNS) is no error of
// the packet: it is the application's business.
func headerError(pkt gopacket.Packet) error {
	e := pkt.ErrorLayer()
	if e == nil {
		return nil
	}
	ls := pkt.Layers()
	for i, l := range ls {
		if l == e && afterTransport(ls, i) {
			return nil
		}
	}
	return e.Error()
}
