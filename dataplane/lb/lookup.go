package lb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/sluice-dp/sluice/dataplane/l4"
)

// ErrNotBalanced is returned by Lookup when the program does not
// encapsulate the probe (no backend up, unknown VIP).
var ErrNotBalanced = errors.New("not balanced")

// Lookup reports the backend the program would send a client's flow to, by
// running a probe packet through it with BPF_PROG_RUN: the answer includes
// the connection table of the calling CPU, not only the ring. For TCP the
// probe is a RST, which the program never inserts into the connection table;
// a UDP probe counts as traffic of its flow and refreshes or creates the
// flow's entry, as a real packet would. The probe never leaves the test run.
func (l *LB) Lookup(v VIP, client netip.AddrPort) (netip.Addr, error) {
	if client.Addr().Is4() != v.Addr.Is4() {
		return netip.Addr{}, fmt.Errorf("lookup %v for %v: %w: client and vip of one family", v, client, ErrInvalid)
	}
	port := v.Port
	if port == 0 {
		port = 80
	}
	frame := probe(client, netip.AddrPortFrom(v.Addr, port), v.Proto)
	opts := ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256)}
	verdict, err := l.objs.LbXdp.Run(&opts)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("lookup %v for %v: run program: %w", v, client, err)
	}
	const xdpTX = 3
	if verdict != xdpTX {
		return netip.Addr{}, fmt.Errorf("lookup %v for %v: %w (verdict %d)", v, client, ErrNotBalanced, verdict)
	}
	return outerDst(opts.DataOut)
}

// probe builds an Ethernet frame from client to vip: a TCP RST or a UDP
// datagram with no payload.
func probe(client, vip netip.AddrPort, proto l4.Proto) []byte {
	seg := make([]byte, 20)
	binary.BigEndian.PutUint16(seg[0:], client.Port())
	binary.BigEndian.PutUint16(seg[2:], vip.Port())
	if proto == l4.TCP {
		seg[12] = 5 << 4
		seg[13] = 0x04 | 0x10 // RST|ACK
	} else {
		seg = seg[:8]
		binary.BigEndian.PutUint16(seg[4:], 8)
		binary.BigEndian.PutUint16(seg[6:], 0xffff) // any non-zero checksum
	}
	frame := make([]byte, 14, 14+40+len(seg))
	if vip.Addr().Is4() {
		binary.BigEndian.PutUint16(frame[12:], 0x0800)
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(seg)))
		ip[8] = 64
		ip[9] = byte(proto)
		s, d := client.Addr().As4(), vip.Addr().As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		frame = append(frame, ip...)
	} else {
		binary.BigEndian.PutUint16(frame[12:], 0x86dd)
		ip := make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(seg)))
		ip[6] = byte(proto)
		ip[7] = 64
		s, d := client.Addr().As16(), vip.Addr().As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		frame = append(frame, ip...)
	}
	return append(frame, seg...)
}

// outerDst reads the destination of an encapsulated frame.
func outerDst(frame []byte) (netip.Addr, error) {
	off := 12
	if len(frame) >= 14 && binary.BigEndian.Uint16(frame[12:]) == 0x8100 {
		off = 16
	}
	if len(frame) < off+2+40 {
		return netip.Addr{}, fmt.Errorf("encapsulated frame of %d bytes: %w", len(frame), ErrNotBalanced)
	}
	ip := frame[off+2:]
	if binary.BigEndian.Uint16(frame[off:]) == 0x0800 {
		return netip.AddrFrom4([4]byte(ip[16:20])), nil
	}
	return netip.AddrFrom16([16]byte(ip[24:40])), nil
}
