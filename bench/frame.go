package bench

import (
	"fmt"
	"net"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// UDPFrame builds an Ethernet/IPv4/UDP frame carrying payload zero bytes,
// with correct lengths and checksums: a typical small-packet input for
// programs that parse headers but do not care what they say. Addresses come from 198.18.0.0/15, the range RFC 2544 sets aside
// for benchmarks, and the frame never leaves the lab's namespace.
func UDPFrame(payload int) ([]byte, error) {
	if payload < 0 {
		return nil, fmt.Errorf("udp frame: negative payload size %d", payload)
	}
	eth := &layers.Ethernet{
		SrcMAC:       net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01},
		DstMAC:       net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02},
		EthernetType: layers.EthernetTypeIPv4,
	}
	ip := &layers.IPv4{
		Version:  4,
		TTL:      64,
		Protocol: layers.IPProtocolUDP,
		SrcIP:    net.IPv4(198, 18, 0, 1),
		DstIP:    net.IPv4(198, 19, 0, 1),
	}
	udp := &layers.UDP{SrcPort: 40000, DstPort: 9}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		return nil, fmt.Errorf("udp frame: %w", err)
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip, udp, gopacket.Payload(make([]byte, payload))); err != nil {
		return nil, fmt.Errorf("udp frame: serialize: %w", err)
	}
	return buf.Bytes(), nil
}
