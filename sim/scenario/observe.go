package scenario

import (
	"fmt"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/sluice-dp/sluice/dataplane/lb"
	"github.com/sluice-dp/sluice/internal/pkttest"
	"github.com/sluice-dp/sluice/sim/traffic"
)

// sentPacket is one crafted packet as it left the sender.
type sentPacket struct {
	flow flowKey
	ip   []byte // the IP packet, without Ethernet
}

// arrival is one frame captured at a capture point, decoded.
type arrival struct {
	at  Iface
	pkt gopacket.Packet
	// inner is the tunnelled packet; nil when the frame is not
	// encapsulated (then encapErr says why).
	inner    gopacket.Packet
	encapErr error
	flow     flowKey
	// outerSrc and outerDst are the outer IP addresses.
	outerSrc, outerDst netip.Addr
}

// stepData is what one step sent and saw, kept for later steps'
// assertions.
type stepData struct {
	name string
	sent []sentPacket
	// flows are the distinct flows sent, in order.
	flows    []flowKey
	captures map[Iface][]traffic.Frame
	arrivals []arrival
	// backends are the VIPs' backends while the step ran.
	backends map[lb.VIP][]lb.Backend
	// landed maps each flow to the backends and LB nodes it was seen at.
	landed map[flowKey]*landing
	http   []httpOutcome
	udp    []udpOutcome
	// conns are the step's connect: loads and holds.
	conns []connOutcome
}

// landing is where a flow's packets arrived.
type landing struct {
	backends map[netip.Addr]int
	lbNodes  map[string]int
}

func (l *landing) only() (netip.Addr, bool) {
	if len(l.backends) != 1 {
		return netip.Addr{}, false
	}
	for a := range l.backends {
		return a, true
	}
	return netip.Addr{}, false
}

// decodeFlow reads the 5-tuple of an IP packet (decoded by gopacket,
// starting at any layer).
func decodeFlow(p gopacket.Packet) (flowKey, bool) {
	var f flowKey
	var src, dst netip.Addr
	switch ip := firstIP(p).(type) {
	case *layers.IPv4:
		src, _ = netip.AddrFromSlice(ip.SrcIP.To4())
		dst, _ = netip.AddrFromSlice(ip.DstIP.To4())
		f.Proto = uint8(ip.Protocol)
	case *layers.IPv6:
		src, _ = netip.AddrFromSlice(ip.SrcIP)
		dst, _ = netip.AddrFromSlice(ip.DstIP)
		f.Proto = uint8(ip.NextHeader)
	default:
		return f, false
	}
	var sp, dp uint16
	if t, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
		sp, dp = uint16(t.SrcPort), uint16(t.DstPort)
	} else if u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
		sp, dp = uint16(u.SrcPort), uint16(u.DstPort)
	}
	f.Src, f.Dst = netip.AddrPortFrom(src, sp), netip.AddrPortFrom(dst, dp)
	return f, true
}

// firstIP returns the outermost IP layer of p.
func firstIP(p gopacket.Packet) gopacket.Layer {
	for _, l := range p.Layers() {
		switch l.(type) {
		case *layers.IPv4, *layers.IPv6:
			return l
		}
	}
	return nil
}

// decodeArrival decodes a captured frame and, if it is a tunnelled packet,
// what it carries.
func decodeArrival(at Iface, f traffic.Frame, port uint16) arrival {
	a := arrival{at: at, pkt: pkttest.Decode(f.Data)}
	if outer, ok := decodeFlow(a.pkt); ok {
		a.outerSrc, a.outerDst = outer.Src.Addr(), outer.Dst.Addr()
	}
	// An inner packet whose application payload gopacket cannot decode
	// (UDP to port 53 that is not DNS, say) comes back with an error but
	// is still a tunnelled IP packet; only its headers matter here.
	inner, err := pkttest.InnerPacket(a.pkt, port)
	if inner == nil {
		a.encapErr = err
		return a
	}
	fk, ok := decodeFlow(inner)
	if !ok {
		a.encapErr = fmt.Errorf("inner packet without IP and transport headers: %v", err)
		return a
	}
	a.inner, a.flow = inner, fk
	return a
}

// innerIP returns the bytes of the inner IP packet of an arrival.
func innerIP(a arrival) []byte {
	if ip := firstIP(a.inner); ip != nil {
		return append(append([]byte(nil), ip.LayerContents()...), ip.LayerPayload()...)
	}
	return nil
}

// normalized is an IP packet with the fields routers change on the way
// (IPv4 TTL and header checksum, IPv6 hop limit) zeroed, so that a packet
// can be matched with what was sent after crossing routers.
func normalized(ip []byte) string {
	b := append([]byte(nil), ip...)
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		b[8], b[10], b[11] = 0, 0, 0
	case len(b) >= 40 && b[0]>>4 == 6:
		b[7] = 0
	}
	return string(b)
}
