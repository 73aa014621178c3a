package traffic

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/sluice-dp/sluice/internal/pkttest"
)

var (
	testSrcMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xc1}
	testDstMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xd1}
)

// decoded is what a test reads back from a crafted frame with gopacket,
// independently of how Craft built it.
type decoded struct {
	src, dst netip.AddrPort
	proto    uint8
	ttl      uint8
	df       bool
	vlan     uint16
	payload  []byte
	tcp      *layers.TCP
	icmpID   uint16
	icmpSeq  uint16
	echo     bool
}

func decode(t *testing.T, frame []byte) decoded {
	t.Helper()
	pkt := pkttest.Decode(frame)
	if el := pkt.ErrorLayer(); el != nil {
		t.Fatalf("frame does not decode: %v", el.Error())
	}
	if errs := pkttest.Checksums(pkt); len(errs) != 0 {
		t.Errorf("bad checksums: %v", errs)
	}
	var d decoded
	eth := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if !bytes.Equal(eth.SrcMAC, testSrcMAC) || !bytes.Equal(eth.DstMAC, testDstMAC) {
		t.Errorf("macs %v -> %v, want %v -> %v", eth.SrcMAC, eth.DstMAC, testSrcMAC, testDstMAC)
	}
	if q, ok := pkt.Layer(layers.LayerTypeDot1Q).(*layers.Dot1Q); ok {
		d.vlan = q.VLANIdentifier
	}
	var sa, da netip.Addr
	switch ip := pkt.NetworkLayer().(type) {
	case *layers.IPv4:
		sa, _ = netip.AddrFromSlice(ip.SrcIP.To4())
		da, _ = netip.AddrFromSlice(ip.DstIP.To4())
		d.proto, d.ttl, d.df = uint8(ip.Protocol), ip.TTL, ip.Flags&layers.IPv4DontFragment != 0
	case *layers.IPv6:
		sa, _ = netip.AddrFromSlice(ip.SrcIP)
		da, _ = netip.AddrFromSlice(ip.DstIP)
		d.proto, d.ttl = uint8(ip.NextHeader), ip.HopLimit
	default:
		t.Fatalf("no IP layer in %v", pkt)
	}
	var sp, dp uint16
	switch l := pkt.TransportLayer().(type) {
	case *layers.TCP:
		sp, dp, d.tcp, d.payload = uint16(l.SrcPort), uint16(l.DstPort), l, l.Payload
	case *layers.UDP:
		sp, dp, d.payload = uint16(l.SrcPort), uint16(l.DstPort), l.Payload
	}
	if e, ok := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok {
		d.echo = e.TypeCode.Type() == layers.ICMPv4TypeEchoRequest
		d.icmpID, d.icmpSeq, d.payload = e.Id, e.Seq, e.Payload
	}
	if e, ok := pkt.Layer(layers.LayerTypeICMPv6Echo).(*layers.ICMPv6Echo); ok {
		d.echo = pkt.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6).TypeCode.Type() == layers.ICMPv6TypeEchoRequest
		d.icmpID, d.icmpSeq, d.payload = e.Identifier, e.SeqNumber, e.Payload
	}
	d.src, d.dst = netip.AddrPortFrom(sa, sp), netip.AddrPortFrom(da, dp)
	return d
}

func TestCraftKinds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spec  FlowSpec
		proto uint8
	}{
		{"tcp-syn v4", FlowSpec{Kind: KindTCPSYN, Src: netip.MustParsePrefix("198.51.100.0/24"), SrcPorts: [2]uint16{20000, 20099},
			Dst: netip.MustParseAddrPort("192.0.2.10:80"), Flows: 50, PacketsPerFlow: 2, DF: true, TTL: 17, Seed: 1}, 6},
		{"tcp-ack v6", FlowSpec{Kind: KindTCPACK, Src: netip.MustParsePrefix("2001:db8:1::/64"),
			Dst: netip.MustParseAddrPort("[2001:db8:ff::10]:443"), Flows: 40, Payload: 100, VLAN: 42, Seed: 2}, 6},
		{"udp v4 vlan", FlowSpec{Kind: KindUDP, Src: netip.MustParsePrefix("198.51.100.7/32"),
			Dst: netip.MustParseAddrPort("192.0.2.10:9999"), Flows: 30, PacketsPerFlow: 3, Payload: 33, VLAN: 7, Seed: 3}, 17},
		{"icmp v4", FlowSpec{Kind: KindICMPEcho, Src: netip.MustParsePrefix("198.51.100.0/28"), SrcPorts: [2]uint16{1, 100},
			Dst: netip.MustParseAddrPort("192.0.2.10:0"), Flows: 20, PacketsPerFlow: 2, Payload: 8, Seed: 4}, 1},
		{"icmp v6", FlowSpec{Kind: KindICMPEcho, Src: netip.MustParsePrefix("2001:db8:1::5/128"),
			Dst: netip.MustParseAddrPort("[2001:db8:ff::10]:7"), Flows: 20, Seed: 5}, 58},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.spec
			flows, frames, err := Craft(s, testSrcMAC, testDstMAC)
			if err != nil {
				t.Fatal(err)
			}
			ppf := max(s.PacketsPerFlow, 1)
			if len(flows) != s.Flows || len(frames) != s.Flows*ppf {
				t.Fatalf("%d flows and %d frames, want %d and %d", len(flows), len(frames), s.Flows, s.Flows*ppf)
			}
			ports := s.SrcPorts
			if ports == [2]uint16{} {
				ports = [2]uint16{1024, 65535}
			}
			wantTTL := s.TTL
			if wantTTL == 0 {
				wantTTL = 64
			}
			seen := map[Flow]bool{}
			for i, f := range flows {
				if seen[f] {
					t.Errorf("flow %d (%v) is a duplicate", i, f)
				}
				seen[f] = true
				if f.Proto != tc.proto {
					t.Errorf("flow %d proto %d, want %d", i, f.Proto, tc.proto)
				}
				if !s.Src.Contains(f.Src.Addr()) {
					t.Errorf("flow %d source %v outside %v", i, f.Src, s.Src)
				}
				if p := f.Src.Port(); p < ports[0] || p > ports[1] {
					t.Errorf("flow %d source port %d outside %d-%d", i, p, ports[0], ports[1])
				}
				wantDst := s.Dst
				if s.Kind == KindICMPEcho {
					wantDst = netip.AddrPortFrom(s.Dst.Addr(), 0)
				}
				if f.Dst != wantDst {
					t.Errorf("flow %d destination %v, want %v", i, f.Dst, wantDst)
				}
				for p := range ppf {
					d := decode(t, frames[i*ppf+p])
					if d.proto != tc.proto || d.ttl != wantTTL || d.vlan != s.VLAN || len(d.payload) != s.Payload {
						t.Errorf("flow %d packet %d: proto %d ttl %d vlan %d payload %d bytes, want %d %d %d %d",
							i, p, d.proto, d.ttl, d.vlan, len(d.payload), tc.proto, wantTTL, s.VLAN, s.Payload)
					}
					if d.df != (s.DF && s.Dst.Addr().Is4()) {
						t.Errorf("flow %d packet %d: DF %v", i, p, d.df)
					}
					switch s.Kind {
					case KindICMPEcho:
						if !d.echo || d.src.Addr() != f.Src.Addr() || d.dst.Addr() != f.Dst.Addr() ||
							d.icmpID != f.Src.Port() || d.icmpSeq != uint16(p+1) {
							t.Errorf("flow %d packet %d: echo=%v %v -> %v id %d seq %d, want request %v id %d seq %d",
								i, p, d.echo, d.src.Addr(), d.dst.Addr(), d.icmpID, d.icmpSeq, f, f.Src.Port(), p+1)
						}
					default:
						if d.src != f.Src || d.dst != f.Dst {
							t.Errorf("flow %d packet %d: %v -> %v, want %v", i, p, d.src, d.dst, f)
						}
					}
					if d.tcp != nil {
						wantSYN, wantACK := s.Kind == KindTCPSYN, s.Kind == KindTCPACK
						if d.tcp.SYN != wantSYN || d.tcp.ACK != wantACK || d.tcp.RST || d.tcp.FIN {
							t.Errorf("flow %d packet %d: tcp flags SYN=%v ACK=%v RST=%v FIN=%v", i, p, d.tcp.SYN, d.tcp.ACK, d.tcp.RST, d.tcp.FIN)
						}
					}
				}
			}
		})
	}
}

func TestCraftDeterministic(t *testing.T) {
	spec := FlowSpec{Kind: KindUDP, Src: netip.MustParsePrefix("198.51.100.0/24"),
		Dst: netip.MustParseAddrPort("192.0.2.10:53"), Flows: 500, Seed: 42}
	f1, fr1, err := Craft(spec, testSrcMAC, testDstMAC)
	if err != nil {
		t.Fatal(err)
	}
	f2, fr2, err := Craft(spec, testSrcMAC, testDstMAC)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f1, f2) || !slices.EqualFunc(fr1, fr2, bytes.Equal) {
		t.Error("the same spec and seed gave different flows or frames")
	}
	spec.Seed = 43
	f3, _, err := Craft(spec, testSrcMAC, testDstMAC)
	if err != nil {
		t.Fatal(err)
	}
	same := 0
	for i := range f1 {
		if f1[i] == f3[i] {
			same++
		}
	}
	// A flow is one of 254 × 64512 pairs; two seeds agree on a position
	// by chance with probability about 6e-8 each.
	if same > 1 {
		t.Errorf("seeds 42 and 43 gave %d of %d identical flows", same, len(f1))
	}
	// Spread: 500 flows over 254 addresses and 64512 ports must use many
	// of both, not walk one dimension.
	addrs, ports := map[netip.Addr]bool{}, map[uint16]bool{}
	for _, f := range f1 {
		addrs[f.Src.Addr()] = true
		ports[f.Src.Port()] = true
	}
	if len(addrs) < 200 || len(ports) < 450 {
		t.Errorf("500 flows used %d addresses and %d ports, want them spread", len(addrs), len(ports))
	}
}

// TestCraftFillsSmallSpace asks for exactly as many flows as the space
// holds, which only works if every pair is used once and the network and
// broadcast addresses are left out.
func TestCraftFillsSmallSpace(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		hosts  []string
	}{
		{"10.9.0.0/29", []string{"10.9.0.1", "10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"}},
		{"10.9.0.4/31", []string{"10.9.0.4", "10.9.0.5"}},
		{"10.9.0.9/32", []string{"10.9.0.9"}},
		{"10.9.0.9/30", []string{"10.9.0.9", "10.9.0.10"}}, // host bits in the prefix are ignored
		{"fd00::/126", []string{"fd00::1", "fd00::2", "fd00::3"}},
	} {
		dst := "192.0.2.1:80"
		if strings.Contains(tc.prefix, ":") {
			dst = "[fd00:1::1]:80"
		}
		spec := FlowSpec{Kind: KindTCPSYN, Src: netip.MustParsePrefix(tc.prefix), SrcPorts: [2]uint16{5000, 5004},
			Dst: netip.MustParseAddrPort(dst), Flows: 5 * len(tc.hosts), Seed: 9}
		flows, _, err := Craft(spec, testSrcMAC, testDstMAC)
		if err != nil {
			t.Errorf("%s: %v", tc.prefix, err)
			continue
		}
		var got, want []string
		for _, f := range flows {
			got = append(got, f.Src.String())
		}
		for _, h := range tc.hosts {
			for p := 5000; p <= 5004; p++ {
				want = append(want, netip.AddrPortFrom(netip.MustParseAddr(h), uint16(p)).String())
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: sources %v, want %v", tc.prefix, got, want)
		}
		spec.Flows++
		if _, _, err := Craft(spec, testSrcMAC, testDstMAC); !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), "Flows") {
			t.Errorf("%s: one flow more than fits: err %v, want ErrInvalidSpec about Flows", tc.prefix, err)
		}
	}
}

func TestCraftErrors(t *testing.T) {
	ok := FlowSpec{Kind: KindUDP, Src: netip.MustParsePrefix("198.51.100.0/24"),
		Dst: netip.MustParseAddrPort("192.0.2.10:53"), Flows: 10}
	if _, _, err := Craft(ok, testSrcMAC, testDstMAC); err != nil {
		t.Fatalf("base spec rejected: %v", err)
	}
	for _, tc := range []struct {
		name   string
		edit   func(*FlowSpec)
		srcMAC net.HardwareAddr
		want   string
	}{
		{"unknown kind", func(s *FlowSpec) { s.Kind = "sctp" }, nil, "Kind"},
		{"no src", func(s *FlowSpec) { s.Src = netip.Prefix{} }, nil, "Src"},
		{"no dst", func(s *FlowSpec) { s.Dst = netip.AddrPort{} }, nil, "Dst"},
		{"mixed families", func(s *FlowSpec) { s.Dst = netip.MustParseAddrPort("[2001:db8::1]:53") }, nil, "mixed address families"},
		{"mapped address", func(s *FlowSpec) { s.Src = netip.MustParsePrefix("::ffff:198.51.100.0/120") }, nil, "IPv4-mapped"},
		{"no dst port", func(s *FlowSpec) { s.Dst = netip.MustParseAddrPort("192.0.2.10:0") }, nil, "destination port"},
		{"multicast dst", func(s *FlowSpec) { s.Dst = netip.MustParseAddrPort("224.0.0.1:53") }, nil, "unicast"},
		{"reversed ports", func(s *FlowSpec) { s.SrcPorts = [2]uint16{2000, 1000} }, nil, "SrcPorts"},
		{"port zero", func(s *FlowSpec) { s.SrcPorts = [2]uint16{0, 1000} }, nil, "SrcPorts"},
		{"no flows", func(s *FlowSpec) { s.Flows = 0 }, nil, "Flows"},
		{"negative packets", func(s *FlowSpec) { s.PacketsPerFlow = -1 }, nil, "PacketsPerFlow"},
		{"too many packets", func(s *FlowSpec) { s.Flows, s.PacketsPerFlow = 1<<20, 1<<5 }, nil, "packets"},
		{"negative payload", func(s *FlowSpec) { s.Payload = -1 }, nil, "Payload"},
		{"huge payload", func(s *FlowSpec) { s.Payload = 65535 - 20 - 8 + 1 }, nil, "Payload"},
		{"bad vlan", func(s *FlowSpec) { s.VLAN = 4095 }, nil, "VLAN"},
		{"prefix too small", func(s *FlowSpec) {
			s.Src = netip.MustParsePrefix("198.51.100.7/32")
			s.SrcPorts = [2]uint16{1000, 1009}
			s.Flows = 11
		}, nil, "do not fit"},
		{"bad mac", func(*FlowSpec) {}, net.HardwareAddr{1, 2, 3}, "mac"},
	} {
		s := ok
		tc.edit(&s)
		src := testSrcMAC
		if tc.srcMAC != nil {
			src = tc.srcMAC
		}
		flows, frames, err := Craft(s, src, testDstMAC)
		if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want ErrInvalidSpec mentioning %q", tc.name, err, tc.want)
		}
		if flows != nil || frames != nil {
			t.Errorf("%s: returned flows or frames with an error", tc.name)
		}
	}
}

func TestPercentile(t *testing.T) {
	var lat []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	r := HTTPResult{Latencies: lat}
	for p, want := range map[float64]time.Duration{0: 1, 1: 1, 50: 50, 99: 99, 99.5: 100, 100: 100} {
		if got := r.Percentile(p); got != want*time.Millisecond {
			t.Errorf("Percentile(%v) = %v, want %v", p, got, want*time.Millisecond)
		}
	}
	if lat[0] != 100*time.Millisecond {
		t.Error("Percentile reordered Latencies")
	}
	if got := (HTTPResult{}).Percentile(50); got != 0 {
		t.Errorf("Percentile of nothing = %v, want 0", got)
	}
}
