// Package flowhash computes the load balancer's flow hash in Go, exactly as
// bpf/lb.bpf.c does (docs/lb.md, "Flow hash"): lookup3 hashword over the
// addresses as big-endian 32-bit words and the two ports in one word, seeded
// with the low 32 bits of the configured seed. The simulator and the tests
// use it to predict, independently of the program, which Maglev slot and so
// which backend a flow reaches, and which GUE source port it gets.
package flowhash

import (
	"encoding/binary"
	"net/netip"

	"github.com/sluice-dp/sluice/ctl/jhash"
)

// Tuple is the 5-tuple hash of a flow from client to vip. It picks the
// Maglev slot of ordinary VIPs, and for every VIP the GUE outer source port
// (49152 + Tuple & 0x3fff) and IPv6 flow label (Tuple & 0xfffff).
func Tuple(client, vip netip.AddrPort, seed uint64) uint32 {
	w := append(words(client.Addr()), words(vip.Addr())...)
	w = append(w, uint32(client.Port())<<16|uint32(vip.Port()))
	return jhash.Words(w, uint32(seed))
}

// Source is the client-affinity hash of source-hash VIPs: the client
// address alone.
func Source(client netip.Addr, seed uint64) uint32 {
	return jhash.Words(words(client), uint32(seed))
}

// words lays an address out as hash input: one word for IPv4, four for
// IPv6, in network byte order.
func words(a netip.Addr) []uint32 {
	b := a.AsSlice()
	w := make([]uint32, len(b)/4)
	for i := range w {
		w[i] = binary.BigEndian.Uint32(b[4*i:])
	}
	return w
}
