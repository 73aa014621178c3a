package lb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/internal/pkttest"
)

// malRandomSeed fixes the generator so that a failure reproduces; the
// failing frame is printed in full as well.
const malRandomSeed = 0x5111ce

// Extra VIPs of the random test, so that mutations can reach every
// encapsulation and hashing mode.
var (
	malAllPorts4    = netip.MustParseAddr("192.0.2.11") // TCP all ports, source hash
	malMixed4       = netip.MustParseAddr("192.0.2.12") // UDP, IPv4 VIP over an IPv6 backend
	malRandBackends = []netip.Addr{
		malBackend4, netip.MustParseAddr("10.1.0.6"), netip.MustParseAddr("10.1.0.7"),
		malBackend6, netip.MustParseAddr("fd00:1::6"), netip.MustParseAddr("fd00:1::7"),
	}
)

func malRandomSetup(t *testing.T, l *LB) {
	t.Helper()
	b := func(a netip.Addr) Backend { return Backend{Addr: a, Weight: 1} }
	bk := malRandBackends
	addVIP(t, l, VIP{Addr: malVIP4, Port: malTCPPort, Proto: l4.TCP}, VIPOptions{}, b(bk[0]), b(bk[1]))
	addVIP(t, l, VIP{Addr: malVIP4, Port: malUDPPort, Proto: l4.UDP}, VIPOptions{Encap: IPIP, Stateless: true}, b(bk[2]))
	addVIP(t, l, VIP{Addr: malAllPorts4, Proto: l4.TCP}, VIPOptions{SourceHash: true}, b(bk[0]), b(bk[2]))
	addVIP(t, l, VIP{Addr: malMixed4, Port: malUDPPort, Proto: l4.UDP}, VIPOptions{}, b(bk[5]))
	addVIP(t, l, VIP{Addr: malVIP6, Port: malTCPPort, Proto: l4.TCP}, VIPOptions{}, b(bk[3]), b(bk[4]))
	addVIP(t, l, VIP{Addr: malVIP6, Proto: l4.UDP}, VIPOptions{Encap: IPIP}, b(bk[4]))
	addVIP(t, l, VIP{Addr: malEmpty4, Port: malTCPPort, Proto: l4.TCP}, VIPOptions{})
}

// malRandomBases are valid frames aimed at the VIPs of malRandomSetup (and a
// few that are not), the starting points of the mutations.
func malRandomBases(t *testing.T) [][]byte {
	f := func(dst netip.Addr, port uint16, opts ...func(*pkttest.Flow)) pkttest.Flow {
		return malFlow(dst, port, opts...)
	}
	// An ICMP error from a router on the path, quoting a packet the VIP
	// sent to the client.
	icmpErr := func(vip netip.Addr) []byte {
		client := malClient4
		if vip.Is6() {
			client = malClient6
		}
		sent := pkttest.IPPacket(pkttest.TCP(pkttest.Flow{
			Src: netip.AddrPortFrom(vip, malTCPPort), Dst: netip.AddrPortFrom(client, malClientPort),
		}, pkttest.ACK))
		from := malFlow(vip, 0)
		if vip.Is4() {
			return pkttest.Serialize(t, append(from.Headers(layers.IPProtocolICMPv4),
				&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 4), Seq: 1400},
				gopacket.Payload(sent[:28]))...)
		}
		return pkttest.Serialize(t, append(from.Headers(layers.IPProtocolICMPv6),
			&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(2, 0)},
			gopacket.Payload(slices.Concat([]byte{0, 0, 5, 0x78}, sent[:48])))...)
	}
	udp4nosum := malEdit(pkttest.UDP(f(malVIP4, malUDPPort, malPayload(33))), malSetU16(20+6, 0))
	tagged := pkttest.TCP(f(malVIP4, malTCPPort, malVLAN(100), malPayload(20)), pkttest.ACK)
	return [][]byte{
		pkttest.TCP(f(malVIP4, malTCPPort), pkttest.SYN),
		pkttest.TCP(f(malVIP4, malTCPPort, malDF, malPayload(100)), pkttest.ACK|pkttest.PSH),
		pkttest.TCP(f(malVIP4, malTCPPort), pkttest.RST),
		pkttest.TCP(f(malAllPorts4, 443, malPayload(10)), pkttest.ACK),
		pkttest.TCP(f(malEmpty4, malTCPPort), pkttest.SYN),
		pkttest.UDP(f(malVIP4, malUDPPort, malPayload(64))),
		pkttest.UDP(f(malMixed4, malUDPPort, malPayload(64))),
		udp4nosum,
		pkttest.TCP(f(malVIP6, malTCPPort, malPayload(50)), pkttest.SYN),
		pkttest.UDP(f(malVIP6, 9999, malPayload(64))),
		pkttest.ICMPEcho(f(malVIP4, 0, malPayload(16)), 1, 2),
		pkttest.ICMPEcho(f(malVIP6, 0, malPayload(16)), 1, 2),
		icmpErr(malVIP4),
		icmpErr(malVIP6),
		tagged,
		malTPID(tagged, 0x88a8),
		malPushTag(tagged, 0x88a8, 200),
		malOpts4(pkttest.TCP(f(malVIP4, malTCPPort, malDF), pkttest.SYN), []byte{148, 4, 0, 0, 1, 1, 1, 0}),
		pkttest.UDP(f(malVIP4, malUDPPort, malDF, malPayload(1550))),
		pkttest.UDP(f(malVIP4, malUDPPort, malPayload(1550))),
		pkttest.UDP(f(malVIP6, malUDPPort, malPayload(1500))),
		malExt6(pkttest.TCP(f(malVIP6, malTCPPort), pkttest.SYN), 0, malHopByHop),
		pkttest.TCP(f(malOther4, malTCPPort), pkttest.SYN),
		pkttest.UDP(f(malOther6, malUDPPort, malPayload(8))),
	}
}

// malEdgeValues are 16-bit values that length, offset and type fields are
// likely to be checked against.
func malEdgeValues(n int) []uint16 {
	return []uint16{0, 1, 4, 5, 0x0f, 0x45, 0x60, 0xffff, 0x8000, 0x2000, 0x4000,
		uint16(n), uint16(n - 13), uint16(n - 14), uint16(n - 15), uint16(n - 54), uint16(n - 34),
		0x0800, 0x86dd, 0x8100, 0x88a8}
}

// malMutate applies one to three random edits to a copy of base, biased
// toward the headers where the parser's decisions are made.
func malMutate(rng *rand.Rand, base []byte) []byte {
	b := slices.Clone(base)
	for n := 1 + rng.IntN(3); n > 0; n-- {
		hdr := min(len(b), 100)
		switch rng.IntN(6) {
		case 0:
			b[rng.IntN(hdr)] ^= byte(1 + rng.IntN(255))
		case 1:
			b[rng.IntN(len(b))] = byte(rng.Uint32())
		case 2:
			if len(b) > 14 {
				b = b[:14+rng.IntN(len(b)-14)]
			}
		case 3:
			edges := malEdgeValues(len(b))
			binary.BigEndian.PutUint16(b[rng.IntN(hdr-1):], edges[rng.IntN(len(edges))])
		case 4:
			junk := make([]byte, 1+rng.IntN(64))
			for i := range junk {
				junk[i] = byte(rng.Uint32())
			}
			b = append(b, junk...)
		case 5:
			// The first byte of the IP header (version and IHL) or the
			// byte right after the EtherType or tag.
			for _, off := range []int{14, 18} {
				if off < len(b) && rng.IntN(2) == 0 {
					b[off] = byte(rng.Uint32())
				}
			}
		}
	}
	return b
}

// malGarbage is a frame of random bytes of length n. With aimed set, the
// EtherType is IP (possibly after a tag) and the destination address is a
// VIP address, so that the garbage gets past the first checks.
func malGarbage(rng *rand.Rand, n int, aimed bool) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	if !aimed || n < 14 {
		return b
	}
	l3 := 14
	if rng.IntN(4) == 0 {
		binary.BigEndian.PutUint16(b[12:], []uint16{0x8100, 0x88a8}[rng.IntN(2)])
		l3 = 18
	}
	v6 := rng.IntN(2) == 0
	et := uint16(0x0800)
	if v6 {
		et = 0x86dd
	}
	if l3 <= n-2 {
		binary.BigEndian.PutUint16(b[l3-2:], et)
	}
	ip := b[min(l3, n):]
	switch {
	case !v6 && len(ip) >= 20:
		ip[0] = 0x40 | ip[0]&0x0f
		a := []netip.Addr{malVIP4, malAllPorts4, malMixed4, malEmpty4}[rng.IntN(4)].As4()
		copy(ip[16:], a[:])
		ip[9] = []byte{1, 6, 17, byte(rng.Uint32())}[rng.IntN(4)]
	case v6 && len(ip) >= 40:
		ip[0] = 0x60 | ip[0]&0x0f
		a := malVIP6.As16()
		copy(ip[24:], a[:])
		ip[6] = []byte{6, 17, 58, 0, 44, byte(rng.Uint32())}[rng.IntN(6)]
	}
	return b
}

// TestMalformedRandom sends 20,000 random and mutated frames through the
// program. Whatever they hold, the program must return a defined verdict
// (never XDP_ABORTED), pass frames unmodified, emit only well-formed
// encapsulations of the input or replies to its sender, and count each
// packet under exactly one verdict and each drop and pass under exactly one
// reason.
func TestMalformedRandom(t *testing.T) {
	l := newLB(t, Options{RingSize: 251})
	malRandomSetup(t, l)
	rng := rand.New(rand.NewPCG(malRandomSeed, malRandomSeed))
	bases := malRandomBases(t)

	const total = 20000
	frames := make([][]byte, 0, total)
	for range total / 4 {
		frames = append(frames, malGarbage(rng, rng.IntN(1601), false))
	}
	for range total / 4 {
		frames = append(frames, malGarbage(rng, 14+rng.IntN(1601-14), true))
	}
	for len(frames) < total {
		frames = append(frames, malMutate(rng, bases[rng.IntN(len(bases))]))
	}

	before := readCounters(t, l)
	verdicts := map[pkttest.Verdict]uint64{}
	var ran, refused, bad int
	for i, in := range frames {
		ro := &ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+4096), Repeat: 1}
		ret, err := l.Program().Run(ro)
		if len(in) < 14 {
			// The kernel refuses a frame shorter than ETH_HLEN before the
			// program runs, so nothing is counted for it.
			if !errors.Is(err, unix.EINVAL) {
				t.Fatalf("frame %d (%d bytes): run error %v, want EINVAL", i, len(in), err)
			}
			refused++
			continue
		}
		if err != nil {
			t.Fatalf("frame %d: run: %v\n%s", i, err, malHex(in))
		}
		ran++
		v := pkttest.Verdict(ret)
		verdicts[v]++
		if msg := malCheckRandomOutput(v, in, ro.DataOut); msg != "" {
			t.Errorf("frame %d: %s\ninput:\n%s\noutput:\n%s", i, msg, malHex(in), malHex(ro.DataOut))
			if bad++; bad == 5 {
				// A few broken frames are enough to debug; thousands drown them.
				t.FailNow()
			}
		}
	}
	after := readCounters(t, l)

	d := func(name string) uint64 {
		if _, ok := after.Stats[name]; !ok {
			t.Fatalf("no counter named %q", name)
		}
		return after.Stats[name] - before.Stats[name]
	}
	sumPrefix := func(prefix string) uint64 {
		var s uint64
		for name := range after.Stats {
			if strings.HasPrefix(name, prefix) {
				s += d(name)
			}
		}
		return s
	}
	t.Logf("%d frames run, %d refused as shorter than Ethernet; verdicts %v", ran, refused, verdicts)
	var moved []string
	for name := range after.Stats {
		if d(name) > 0 {
			moved = append(moved, fmt.Sprintf("%s=%d", name, d(name)))
		}
	}
	slices.Sort(moved)
	t.Logf("counters: %s", strings.Join(moved, " "))

	if got := d("pass") + d("tx") + d("drop"); got != uint64(ran) {
		t.Errorf("pass+tx+drop moved by %d, want %d (one verdict per packet)", got, ran)
	}
	for _, c := range []struct {
		name string
		v    pkttest.Verdict
	}{{"pass", pkttest.XDPPass}, {"tx", pkttest.XDPTX}, {"drop", pkttest.XDPDrop}} {
		if d(c.name) != verdicts[c.v] {
			t.Errorf("counter %s moved by %d, but the program returned %v %d times", c.name, d(c.name), c.v, verdicts[c.v])
		}
	}
	if got := sumPrefix("drop_"); got != d("drop") {
		t.Errorf("drop_* reasons moved by %d in all, drop by %d: each drop needs exactly one reason", got, d("drop"))
	}
	if got := sumPrefix("pass_"); got != d("pass") {
		t.Errorf("pass_* reasons moved by %d in all, pass by %d: each pass needs exactly one reason", got, d("pass"))
	}
	if got := d("encap_gue") + d("encap_ipip") + d("icmp_echo_reply") + d("ptb_sent"); got != d("tx") {
		t.Errorf("encapsulations and replies moved by %d in all, tx by %d", got, d("tx"))
	}
	// The corpus must reach the parser's and balancer's decisions, or the
	// checks above prove little.
	for _, name := range []string{
		"pass_not_ip", "pass_not_vip", "pass_short", "pass_vlan_stack",
		"encap_gue", "encap_ipip", "icmp_echo_reply", "icmp_err_forward", "ptb_sent",
		"drop_truncated", "drop_bad_header", "drop_fragment", "drop_ipv6_ext",
		"drop_unknown_proto", "drop_no_backend", "drop_too_big", "drop_icmp",
	} {
		if d(name) == 0 {
			t.Errorf("no random frame reached %s", name)
		}
	}
}

// malCheckRandomOutput returns what is wrong with the output of one random
// frame, or "".
func malCheckRandomOutput(v pkttest.Verdict, in, out []byte) string {
	switch v {
	case pkttest.XDPPass:
		if !bytes.Equal(in, out) {
			return "XDP_PASS with a modified frame"
		}
	case pkttest.XDPDrop:
	case pkttest.XDPTX:
		if len(out) < 14 {
			return fmt.Sprintf("XDP_TX of a %d-byte frame", len(out))
		}
		if bytes.Equal(out[:6], gatewayMAC) {
			return malCheckEncap(in, out)
		}
		// Anything else is a reply (echo or too big) to the sender.
		if !bytes.Equal(out[:6], in[6:12]) || !bytes.Equal(out[6:12], in[:6]) {
			return "XDP_TX of a reply whose MAC addresses are not the input's swapped"
		}
		// A too-big message is written from scratch, so its checksums must
		// hold whatever the input was. An echo reply's are updated from the
		// input's and stay as wrong as a mutated input made them.
		pkt := pkttest.Decode(out)
		ic4, _ := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
		ic6, _ := pkt.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
		if (ic4 != nil && ic4.TypeCode.Type() == layers.ICMPv4TypeDestinationUnreachable) ||
			(ic6 != nil && ic6.TypeCode.Type() == layers.ICMPv6TypePacketTooBig) {
			if errs := pkttest.Checksums(pkt); len(errs) > 0 {
				return fmt.Sprintf("too-big reply with wrong checksums: %v", errs)
			}
		}
	default:
		return fmt.Sprintf("verdict %v", v)
	}
	return ""
}

// malCheckEncap checks that out tunnels the whole input IP packet to one of
// the configured backends, from the node's MAC address.
func malCheckEncap(in, out []byte) string {
	if !bytes.Equal(out[6:12], in[:6]) {
		return "encapsulated frame not sent from the input's destination MAC"
	}
	pkt := pkttest.Decode(out)
	// A decode error of the inner packet itself is no fault of the LB: it
	// tunnels what it got (bogus IPv4 options, say) for the backend's stack
	// to judge. Only a missing tunnel is.
	inner, err := pkttest.InnerPacket(pkt, pkttest.DefaultGUEPort)
	if inner == nil {
		return fmt.Sprintf("XDP_TX toward the gateway, but no tunnelled packet: %v", err)
	}
	if want := pkttest.IPPacket(in); !bytes.Equal(inner.Data(), want) {
		return "tunnelled packet differs from the input IP packet"
	}
	var dst netip.Addr
	switch ip := pkt.NetworkLayer().(type) {
	case *layers.IPv4:
		dst, _ = netip.AddrFromSlice(ip.DstIP)
	case *layers.IPv6:
		dst, _ = netip.AddrFromSlice(ip.DstIP)
	}
	if !slices.Contains(malRandBackends, dst) {
		return fmt.Sprintf("tunnelled to %v, which is no backend", dst)
	}
	return ""
}

func malHex(b []byte) string {
	var s strings.Builder
	for i := 0; i < len(b); i += 16 {
		fmt.Fprintf(&s, "%04x  % x\n", i, b[i:min(i+16, len(b))])
	}
	return s.String()
}
