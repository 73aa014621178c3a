package lb

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/sluice-dp/sluice/ctl/maglev"
	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/internal/pkttest"
	"github.com/sluice-dp/sluice/internal/testenv"
)

// Addresses of the encapsulation tests (documentation ranges; they never
// leave BPF_PROG_RUN).
var (
	encVIP4    = netip.MustParseAddr("192.0.2.10")
	encVIP6    = netip.MustParseAddr("2001:db8:f::10")
	encClient4 = netip.MustParseAddrPort("198.51.100.7:40000")
	encClient6 = netip.MustParseAddrPort("[2001:db8:c::abcd:1234]:40000")
	encRouter4 = netip.MustParseAddr("203.0.113.1")
	encRouter6 = netip.MustParseAddr("2001:db8:1::1")

	encTCP4 = VIP{Addr: encVIP4, Port: 80, Proto: l4.TCP}
	encUDP4 = VIP{Addr: encVIP4, Port: 5000, Proto: l4.UDP}
	encTCP6 = VIP{Addr: encVIP6, Port: 80, Proto: l4.TCP}
	encUDP6 = VIP{Addr: encVIP6, Port: 5000, Proto: l4.UDP}

	encBE4  = []Backend{be("10.1.0.5")}
	encBE6  = []Backend{be("fd00:1::5")}
	encBEs4 = []Backend{be("10.1.0.1"), be("10.1.0.2"), be("10.1.0.3"), be("10.1.0.4")}
	encBEs6 = []Backend{be("fd00:1::1"), be("fd00:1::2"), be("fd00:1::3"), be("fd00:1::4")}
)

// encIn returns the flow of a client packet to vip:port with the inner
// fields the outer header must copy or ignore set to telling values: a
// non-zero TOS, a TTL and IP id the outer header must not copy.
func encIn(client netip.AddrPort, vip netip.Addr, port uint16, df bool) pkttest.Flow {
	return pkttest.Flow{
		SrcMAC: clientMAC, DstMAC: nodeMAC,
		Src: client, Dst: netip.AddrPortFrom(vip, port),
		TTL: 57, TOS: 0xb8, DF: df, ID: 0x1234,
	}
}

func encSYN(_ testing.TB, f pkttest.Flow) []byte { return pkttest.TCP(f, pkttest.SYN) }

func encUDPWith(n int) func(testing.TB, pkttest.Flow) []byte {
	return func(_ testing.TB, f pkttest.Flow) []byte {
		f.Payload = encPayload(n)
		return pkttest.UDP(f)
	}
}

func encUDPZero(n int) func(testing.TB, pkttest.Flow) []byte {
	return func(t testing.TB, f pkttest.Flow) []byte { return encUDPZeroCsum(t, f, n) }
}

func encACKData(n int) func(testing.TB, pkttest.Flow) []byte {
	return func(_ testing.TB, f pkttest.Flow) []byte {
		f.Payload = encPayload(n)
		return pkttest.TCP(f, pkttest.ACK|pkttest.PSH)
	}
}

// encICMPErrorFrom builds an error from f.Src to f.Dst (a VIP) quoting the
// SYN-ACK vip:80 → client that the VIP's backend sent.
func encICMPErrorFrom(typ, code uint8, client netip.AddrPort) func(testing.TB, pkttest.Flow) []byte {
	return func(t testing.TB, f pkttest.Flow) []byte {
		quoted := pkttest.TCP(pkttest.Flow{
			Src: netip.AddrPortFrom(f.Dst.Addr(), 80), Dst: client, DF: true,
		}, pkttest.SYN|pkttest.ACK)
		return encICMPError(t, f, typ, code, encQuote(quoted))
	}
}

func encPadded(build func(testing.TB, pkttest.Flow) []byte, size int, fill byte) func(testing.TB, pkttest.Flow) []byte {
	return func(t testing.TB, f pkttest.Flow) []byte { return encPad(build(t, f), size, fill) }
}

var (
	encOptNOPs = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
	// Record route with two hops recorded, then end of list: 12 bytes.
	encOptRR = []layers.IPv4Option{
		{OptionType: 7, OptionLength: 11, OptionData: []byte{12, 10, 9, 8, 7, 10, 9, 8, 6}},
		{OptionType: 0},
	}
	// The largest header: 40 bytes of options (IHL 15).
	encOptMax = []layers.IPv4Option{
		{OptionType: 7, OptionLength: 39, OptionData: append([]byte{20, 10, 9, 8, 7, 10, 9, 8, 6, 10, 9, 8, 5, 10, 9, 8, 4}, make([]byte, 20)...)},
		{OptionType: 0},
	}
)

type encCase struct {
	name     string
	vip      VIP
	opts     VIPOptions
	backends []Backend
	config   func(*Config) // applied with SetConfig before the VIP is added
	in       pkttest.Flow
	build    func(testing.TB, pkttest.Flow) []byte
	// hashed is the client and VIP side of the flow the program hashes,
	// when it is not in.Src → in.Dst (ICMP errors hash the flow they quote).
	hashed *[2]netip.AddrPort
	// pcp is the 802.1Q priority of the input's tag, which Flow cannot set.
	pcp uint8
}

func encUDPZeroCases() []encCase {
	var cs []encCase
	// UDP length 8+n: 0 and 56 are whole 64-byte blocks or words only; 1, 3,
	// 63, 65 have an odd byte; 3 and 63 also a trailing 16-bit word; 64 and
	// 65 a block plus words; 1000 fifteen blocks plus words.
	for _, n := range []int{0, 1, 3, 56, 63, 64, 65, 1000} {
		for _, b := range []struct {
			fam string
			be  []Backend
		}{{"v4", encBE4}, {"v6", encBE6}} {
			cs = append(cs, encCase{
				name:     "checksum/udp zero checksum " + strconv.Itoa(n) + "-byte payload over " + b.fam + " outer",
				vip:      encUDP4,
				backends: b.be,
				in:       encIn(encClient4, encVIP4, 5000, true),
				build:    encUDPZero(n),
			})
		}
	}
	// A jumbo datagram: only a larger tunnel MTU lets it through, and its
	// walk is the longest (39 blocks, then words and an odd byte).
	for _, b := range []struct {
		fam string
		be  []Backend
	}{{"v4", encBE4}, {"v6", encBE6}} {
		cs = append(cs, encCase{
			name:     "checksum/udp zero checksum 2503-byte payload, tunnel MTU 3000, over " + b.fam + " outer",
			vip:      encUDP4,
			backends: b.be,
			config:   func(c *Config) { c.TunnelMTU = 3000 },
			in:       encIn(encClient4, encVIP4, 5000, true),
			build:    encUDPZero(2503),
		})
	}
	return cs
}

// encAllOnesCases are the checksums whose computed value is zero and so go
// on the wire as 0xffff (RFC 768): in the inner UDP header, where the
// program derives the segment's sum from it, and in the outer one, which
// the program must not send as 0 ("no checksum", invalid over IPv6).
func encAllOnesCases() []encCase {
	var cs []encCase
	for _, b := range []struct {
		fam string
		be  []Backend
	}{{"v4", encBE4}, {"v6", encBE6}} {
		cs = append(cs, encCase{
			name: "checksum/inner udp checksum 0xffff over " + b.fam + " outer", vip: encUDP4, backends: b.be,
			in: encIn(encClient4, encVIP4, 5000, true),
			build: func(t testing.TB, f pkttest.Flow) []byte {
				// Two payload bytes at an even offset equal to the checksum
				// without them make the segment sum 0xffff.
				f.Payload = encPayload(40)
				f.Payload[38], f.Payload[39] = 0, 0
				c := encUDPChecksum(t, pkttest.UDP(f))
				f.Payload[38], f.Payload[39] = byte(c>>8), byte(c)
				in := pkttest.UDP(f)
				if got := encUDPChecksum(t, in); got != 0xffff {
					t.Fatalf("setup: inner checksum %#04x, want 0xffff", got)
				}
				return in
			},
		})
		c := encCase{
			name: "checksum/outer udp checksum 0xffff over " + b.fam + " outer", vip: encUDP4, backends: b.be,
			in: encIn(encClient4, encVIP4, 5000, true),
		}
		c.build = func(t testing.TB, f pkttest.Flow) []byte {
			// Without an inner checksum the outer one depends on every
			// payload byte; tune two of them as above, against the
			// expected outer header.
			cfg := encConfig(c)
			h := modelFlowHash(f.Src, f.Dst, cfg.Seed)
			want := func(in []byte) []byte {
				return encOuter{in: f, inner: pkttest.IPPacket(in), backend: b.be[0].Addr, hash: h, cfg: cfg}.frame()
			}
			p := encPayload(40)
			p[38], p[39] = 0, 0
			o := encUDPChecksum(t, want(encUDPZeroCsumPayload(t, f, p)))
			p[38], p[39] = byte(o>>8), byte(o)
			in := encUDPZeroCsumPayload(t, f, p)
			if got := encUDPChecksum(t, want(in)); got != 0xffff {
				t.Fatalf("setup: expected outer checksum %#04x, want 0xffff", got)
			}
			return in
		}
		cs = append(cs, c)
	}
	return cs
}

var encCases = append(append([]encCase{
	// GUE outer header fields.
	{
		name: "gue/v4 tcp to v4 backend copies DF and TOS", vip: encTCP4, backends: encBE4,
		in: encIn(encClient4, encVIP4, 80, true), build: encSYN,
	},
	{
		name: "gue/v4 tcp without DF to v4 backend leaves DF clear", vip: encTCP4, backends: encBE4,
		in: encIn(encClient4, encVIP4, 80, false), build: encSYN,
	},
	{
		name: "gue/v4 udp to v4 backend", vip: encUDP4, backends: encBE4,
		in: encIn(encClient4, encVIP4, 5000, true), build: encUDPWith(100),
	},
	{
		name: "gue/v4 tcp to v6 backend copies TOS to traffic class", vip: encTCP4, backends: encBE6,
		in: encIn(encClient4, encVIP4, 80, true), build: encSYN,
	},
	{
		name: "gue/v4 udp without DF to v6 backend", vip: encUDP4, backends: encBE6,
		in: encIn(encClient4, encVIP4, 5000, false), build: encUDPWith(100),
	},
	{
		name: "gue/v6 tcp to v6 backend copies traffic class not flow label", vip: encTCP6, backends: encBE6,
		in: func() pkttest.Flow {
			f := encIn(encClient6, encVIP6, 80, false)
			f.FlowLabel = 0xabcde
			return f
		}(),
		build: encSYN,
	},
	{
		name: "gue/v6 udp to v6 backend", vip: encUDP6, backends: encBE6,
		in: encIn(encClient6, encVIP6, 5000, false), build: encUDPWith(100),
	},
	{
		name: "gue/configured port over v4 outer", vip: encTCP4, backends: encBE4,
		config: func(c *Config) { c.GUEPort = 7777 },
		in:     encIn(encClient4, encVIP4, 80, true), build: encSYN,
	},
	{
		name: "gue/configured port over v6 outer", vip: encTCP6, backends: encBE6,
		config: func(c *Config) { c.GUEPort = 7777 },
		in:     encIn(encClient6, encVIP6, 80, false), build: encSYN,
	},
	{
		name: "gue/outer source and gateway from config, source MAC from the frame, v4", vip: encTCP4, backends: encBE4,
		config: func(c *Config) {
			c.SourceV4 = netip.MustParseAddr("10.0.0.99")
			c.GatewayMAC = encMAC("02:00:00:00:00:fd")
		},
		in: func() pkttest.Flow {
			f := encIn(encClient4, encVIP4, 80, true)
			f.DstMAC = encMAC("02:00:00:00:00:99")
			return f
		}(),
		build: encSYN,
	},
	{
		name: "gue/outer source and gateway from config, source MAC from the frame, v6", vip: encTCP6, backends: encBE6,
		config: func(c *Config) {
			c.SourceV6 = netip.MustParseAddr("fd00::99")
			c.GatewayMAC = encMAC("02:00:00:00:00:fd")
		},
		in: func() pkttest.Flow {
			f := encIn(encClient6, encVIP6, 80, false)
			f.DstMAC = encMAC("02:00:00:00:00:99")
			return f
		}(),
		build: encSYN,
	},

	// Outer UDP checksum derived from the inner transport checksum.
	{
		name: "checksum/tcp with odd 1001-byte payload over v4 outer", vip: encTCP4, backends: encBE4,
		in: encIn(encClient4, encVIP4, 80, true), build: encACKData(1001),
	},
	{
		name: "checksum/tcp with odd 1001-byte payload over v6 outer", vip: encTCP4, backends: encBE6,
		in: encIn(encClient4, encVIP4, 80, true), build: encACKData(1001),
	},
	{
		name: "checksum/v6 tcp with odd 1001-byte payload", vip: encTCP6, backends: encBE6,
		in: encIn(encClient6, encVIP6, 80, false), build: encACKData(1001),
	},
	{
		name: "checksum/v6 udp with odd 333-byte payload", vip: encUDP6, backends: encBE6,
		in: encIn(encClient6, encVIP6, 5000, false), build: encUDPWith(333),
	},

	// ICMP errors about a VIP flow go to that flow's backend.
	{
		name: "icmp/v4 destination unreachable from a router to the flow's backend", vip: encTCP4, backends: encBEs4,
		in: func() pkttest.Flow {
			f := encIn(netip.AddrPortFrom(encRouter4, 0), encVIP4, 0, false)
			f.TOS = 0xc0
			return f
		}(),
		build:  encICMPErrorFrom(3, 1, encClient4),
		hashed: &[2]netip.AddrPort{encClient4, netip.AddrPortFrom(encVIP4, 80)},
	},
	{
		name: "icmp/v4 destination unreachable to a v6 backend", vip: encTCP4, backends: encBEs6,
		in: func() pkttest.Flow {
			f := encIn(netip.AddrPortFrom(encRouter4, 0), encVIP4, 0, true)
			f.TOS = 0xc0
			return f
		}(),
		build:  encICMPErrorFrom(3, 1, encClient4),
		hashed: &[2]netip.AddrPort{encClient4, netip.AddrPortFrom(encVIP4, 80)},
	},
	{
		name: "icmp/v6 destination unreachable from a router to the flow's backend", vip: encTCP6, backends: encBEs6,
		in: func() pkttest.Flow {
			f := encIn(netip.AddrPortFrom(encRouter6, 0), encVIP6, 0, false)
			f.TOS = 0xc0
			return f
		}(),
		build:  encICMPErrorFrom(1, 4, encClient6),
		hashed: &[2]netip.AddrPort{encClient6, netip.AddrPortFrom(encVIP6, 80)},
	},
	// Under IPIP the outer source is crafted from the quoted flow's client,
	// so the error reaches the backend from the same address as the flow.
	{
		name: "icmp/v4 destination unreachable under ipip, outer source from the quoted client", vip: encTCP4,
		opts: VIPOptions{Encap: IPIP}, backends: encBEs4,
		in:     encIn(netip.AddrPortFrom(encRouter4, 0), encVIP4, 0, false),
		build:  encICMPErrorFrom(3, 1, encClient4),
		hashed: &[2]netip.AddrPort{encClient4, netip.AddrPortFrom(encVIP4, 80)},
	},
	{
		name: "icmp/v6 destination unreachable under ip6ip6, outer source from the quoted client", vip: encTCP6,
		opts: VIPOptions{Encap: IPIP}, backends: encBEs6,
		in:     encIn(netip.AddrPortFrom(encRouter6, 0), encVIP6, 0, false),
		build:  encICMPErrorFrom(1, 4, encClient6),
		hashed: &[2]netip.AddrPort{encClient6, netip.AddrPortFrom(encVIP6, 80)},
	},

	// IPIP family.
	{
		name: "ipip/v4 in v4 with DF", vip: encTCP4, opts: VIPOptions{Encap: IPIP}, backends: encBE4,
		in: encIn(encClient4, encVIP4, 80, true), build: encSYN,
	},
	{
		name: "ipip/v4 in v4 without DF", vip: encUDP4, opts: VIPOptions{Encap: IPIP}, backends: encBE4,
		in: encIn(encClient4, encVIP4, 5000, false), build: encUDPZero(65),
	},
	{
		name: "ipip/v4 in v6", vip: encTCP4, opts: VIPOptions{Encap: IPIP}, backends: encBE6,
		in: encIn(encClient4, encVIP4, 80, true), build: encSYN,
	},
	{
		name: "ipip/v6 in v6", vip: encTCP6, opts: VIPOptions{Encap: IPIP}, backends: encBE6,
		in: encIn(encClient6, encVIP6, 80, false), build: encSYN,
	},
	{
		name: "ipip/configured v4 prefix 198.18.0.0/15", vip: encTCP4, opts: VIPOptions{Encap: IPIP}, backends: encBE4,
		config: func(c *Config) { c.IPIPPrefixV4 = netip.MustParsePrefix("198.18.0.0/15") },
		in:     encIn(encClient4, encVIP4, 80, true), build: encSYN,
	},
	{
		name: "ipip/configured v6 prefix 2001:db8:ffff::/64, v6 in v6", vip: encTCP6, opts: VIPOptions{Encap: IPIP}, backends: encBE6,
		config: func(c *Config) { c.IPIPPrefixV6 = netip.MustParsePrefix("2001:db8:ffff::/64") },
		in:     encIn(encClient6, encVIP6, 80, false), build: encSYN,
	},
	{
		name: "ipip/configured v6 prefix 2001:db8:ffff::/64, v4 in v6", vip: encTCP4, opts: VIPOptions{Encap: IPIP}, backends: encBE6,
		config: func(c *Config) { c.IPIPPrefixV6 = netip.MustParsePrefix("2001:db8:ffff::/64") },
		in:     encIn(encClient4, encVIP4, 80, true), build: encSYN,
	},

	// 802.1Q: the tag stays, the EtherType behind it is the outer family.
	{
		name: "vlan/gue v4 to v4 backend keeps the tag", vip: encTCP4, backends: encBE4,
		in:    func() pkttest.Flow { f := encIn(encClient4, encVIP4, 80, true); f.VLAN = 100; return f }(),
		build: encSYN,
	},
	{
		name: "vlan/gue v4 to v6 backend keeps the tag, IPv6 behind it", vip: encTCP4, backends: encBE6,
		in:    func() pkttest.Flow { f := encIn(encClient4, encVIP4, 80, true); f.VLAN = 100; return f }(),
		build: encSYN,
	},
	{
		name: "vlan/gue v6 keeps priority bits of the tag", vip: encTCP6, backends: encBE6,
		in:    func() pkttest.Flow { f := encIn(encClient6, encVIP6, 80, false); f.VLAN = 100; return f }(),
		build: encSYN, pcp: 5,
	},
	{
		name: "vlan/ipip v4 in v4 keeps the tag", vip: encTCP4, opts: VIPOptions{Encap: IPIP}, backends: encBE4,
		in:    func() pkttest.Flow { f := encIn(encClient4, encVIP4, 80, true); f.VLAN = 100; return f }(),
		build: encSYN,
	},

	// Ethernet padding never enters the tunnel.
	{
		name: "padding/v4 tcp syn padded to 60 bytes with zeros", vip: encTCP4, backends: encBE4,
		in: encIn(encClient4, encVIP4, 80, true), build: encPadded(encSYN, 60, 0),
	},
	{
		name: "padding/v4 udp zero checksum padded with non-zero bytes", vip: encUDP4, backends: encBE4,
		in: encIn(encClient4, encVIP4, 5000, true), build: encPadded(encUDPZero(3), 60, 0xff),
	},
	{
		name: "padding/v6 tcp with trailing bytes to v6 backend", vip: encTCP6, backends: encBE6,
		in: encIn(encClient6, encVIP6, 80, false), build: encPadded(encSYN, 74+8, 0xee),
	},
	{
		name: "padding/vlan ipip v4 tcp syn padded to 64 bytes", vip: encTCP4, opts: VIPOptions{Encap: IPIP}, backends: encBE4,
		in:    func() pkttest.Flow { f := encIn(encClient4, encVIP4, 80, true); f.VLAN = 100; return f }(),
		build: encPadded(encSYN, 64, 0),
	},

	// IPv4 options stay in the inner header and enter the outer checksum.
	{
		name: "options/v4 tcp with NOP NOP NOP EOL", vip: encTCP4, backends: encBE4,
		in: encIn(encClient4, encVIP4, 80, true),
		build: func(t testing.TB, f pkttest.Flow) []byte {
			return encTCPWithIPv4Options(t, f, pkttest.SYN, encOptNOPs)
		},
	},
	{
		name: "options/v4 udp with record route to v6 backend", vip: encUDP4, backends: encBE6,
		in: encIn(encClient4, encVIP4, 5000, true),
		build: func(t testing.TB, f pkttest.Flow) []byte {
			f.Payload = encPayload(77)
			return encUDPWithIPv4Options(t, f, encOptRR, false)
		},
	},
	{
		name: "options/v4 udp zero checksum with 40 bytes of options", vip: encUDP4, backends: encBE4,
		in: encIn(encClient4, encVIP4, 5000, true),
		build: func(t testing.TB, f pkttest.Flow) []byte {
			f.Payload = encPayload(65)
			return encUDPWithIPv4Options(t, f, encOptMax, true)
		},
	},
	{
		name: "options/ipip v4 in v4 with record route", vip: encTCP4, opts: VIPOptions{Encap: IPIP}, backends: encBE4,
		in: encIn(encClient4, encVIP4, 80, false),
		build: func(t testing.TB, f pkttest.Flow) []byte {
			return encTCPWithIPv4Options(t, f, pkttest.SYN, encOptRR)
		},
	},
}, encUDPZeroCases()...), encAllOnesCases()...)

// encWantStats is the global counter movement of one balanced packet on a
// fresh program: one verdict, one encapsulation, one connection-table miss
// of the right kind, plus the ICMP forwarding event.
func encWantStats(t testing.TB, in []byte, ipip bool) map[string]uint64 {
	t.Helper()
	want := map[string]uint64{"tx": 1, "conn_miss": 1}
	if ipip {
		want["encap_ipip"] = 1
	} else {
		want["encap_gue"] = 1
	}
	pkt := pkttest.Decode(in)
	isICMP := pkt.Layer(layers.LayerTypeICMPv4) != nil || pkt.Layer(layers.LayerTypeICMPv6) != nil
	tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	switch {
	case isICMP:
		want["icmp_err_forward"] = 1
		want["conn_miss_non_syn"] = 1
	case tcp != nil && tcp.SYN && !tcp.ACK:
		want["conn_miss_syn"] = 1
	default:
		want["conn_miss_non_syn"] = 1
	}
	return want
}

// encConfig is the configuration a case runs with, DESIGN defaults filled
// in by the test itself.
func encConfig(c encCase) Config {
	cfg := testConfig()
	if c.config != nil {
		c.config(&cfg)
	}
	if cfg.GUEPort == 0 {
		cfg.GUEPort = 6080
	}
	if !cfg.IPIPPrefixV4.IsValid() {
		cfg.IPIPPrefixV4 = netip.MustParsePrefix("172.16.0.0/16")
	}
	if !cfg.IPIPPrefixV6.IsValid() {
		cfg.IPIPPrefixV6 = netip.MustParsePrefix("100::/64")
	}
	return cfg
}

func TestEncap(t *testing.T) {
	if len(encCases) < 25 {
		t.Fatalf("only %d cases", len(encCases))
	}
	seen := map[string]bool{}
	for _, c := range encCases {
		if seen[c.name] {
			t.Fatalf("two cases named %q", c.name)
		}
		seen[c.name] = true
		t.Run(c.name, func(t *testing.T) { encRunCase(t, c) })
	}
}

func encRunCase(t *testing.T, c encCase) {
	l := newLB(t, Options{})
	cfg := encConfig(c)
	if c.config != nil {
		if err := l.SetConfig(cfg); err != nil {
			t.Fatalf("set config: %v", err)
		}
	}
	addVIP(t, l, c.vip, c.opts, c.backends...)
	in := c.build(t, c.in)
	if c.pcp != 0 {
		in = encSetPCP(in, c.pcp)
	}
	inner := pkttest.IPPacket(in)

	before := readCounters(t, l)
	res := pkttest.Run(t, l.Program(), in)
	after := readCounters(t, l)
	if res.Verdict != pkttest.XDPTX {
		t.Fatalf("verdict %v, want %v", res.Verdict, pkttest.XDPTX)
	}

	client, vipSide := c.in.Src, c.in.Dst
	if c.hashed != nil {
		client, vipSide = c.hashed[0], c.hashed[1]
	}
	h := modelFlowHash(client, vipSide, cfg.Seed)
	backend := encMaglevPick(t, c.backends, maglev.DefaultSize, cfg.Seed, h)
	ipip := c.opts.Encap == IPIP
	want := encOuter{
		in: c.in, inner: inner, backend: backend, hash: h, cfg: cfg, ipip: ipip, client: client,
	}.frame()
	if c.pcp != 0 {
		want = encSetPCP(want, c.pcp)
	}

	opts := []pkttest.Option{pkttest.GUEPort(cfg.GUEPort)}
	pkttest.Expect(t, want, res.Out, opts...)
	pkttest.VerifyChecksums(t, res.Packet, opts...)
	if got, err := pkttest.InnerPacket(res.Packet, cfg.GUEPort); err != nil {
		t.Errorf("inner packet: %v", err)
	} else if !bytes.Equal(got.Data(), inner) {
		t.Errorf("inner packet is not the input's IP packet:\n got % x\nwant % x", got.Data(), inner)
	}
	checkStats(t, before, after, encWantStats(t, in, ipip))
	encCheckTraffic(t, before, after, c.vip, backend, 1, uint64(len(inner)))
}

// TestEncapGUESourcePort checks the outer source port of many flows against
// 49152 + (jhash5 & 0x3fff): in range, spread over flows, stable per flow.
func TestEncapGUESourcePort(t *testing.T) {
	const flows = 1000
	for _, fam := range []struct {
		name    string
		vip     netip.Addr
		backend []Backend
		client  func(i int) netip.AddrPort
	}{
		{"v4", encVIP4, encBE4, func(i int) netip.AddrPort {
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(100 + i%4), byte(i / 4)}), uint16(1024+i*61))
		}},
		{"v6", encVIP6, encBE6, func(i int) netip.AddrPort {
			a := encClient6.Addr().As16()
			a[13], a[15] = byte(i>>8), byte(i)
			return netip.AddrPortFrom(netip.AddrFrom16(a), uint16(1024+i*61))
		}},
	} {
		t.Run(fam.name+"/1000 flows spread", func(t *testing.T) {
			l := newLB(t, Options{})
			vip := VIP{Addr: fam.vip, Port: 80, Proto: l4.TCP}
			addVIP(t, l, vip, VIPOptions{}, fam.backend...)
			seed := testConfig().Seed
			ports := map[uint16]bool{}
			var ipBytes uint64
			before := readCounters(t, l)
			for i := range flows {
				f := encIn(fam.client(i), fam.vip, 80, true)
				in := pkttest.TCP(f, pkttest.SYN)
				ipBytes += uint64(len(pkttest.IPPacket(in)))
				res := pkttest.Run(t, l.Program(), in)
				if res.Verdict != pkttest.XDPTX {
					t.Fatalf("flow %v: verdict %v, want %v", f.Src, res.Verdict, pkttest.XDPTX)
				}
				h := modelFlowHash(f.Src, f.Dst, seed)
				_, sport, label := encOuterFields(t, res.Packet)
				if want := encGUESport(h); sport != want {
					t.Errorf("flow %v: outer source port %d, want %d", f.Src, sport, want)
				}
				if sport < 49152 {
					t.Errorf("flow %v: outer source port %d below 49152", f.Src, sport)
				}
				if fam.vip.Is6() && label != h&0xfffff {
					t.Errorf("flow %v: flow label %#x, want %#x", f.Src, label, h&0xfffff)
				}
				ports[sport] = true
			}
			if len(ports) < 900 {
				t.Errorf("%d flows used %d distinct source ports, want at least 900", flows, len(ports))
			}
			after := readCounters(t, l)
			checkStats(t, before, after, map[string]uint64{
				"tx": flows, "encap_gue": flows, "conn_miss": flows, "conn_miss_syn": flows,
			})
			encCheckTraffic(t, before, after, vip, fam.backend[0].Addr, flows, ipBytes)
		})

		t.Run(fam.name+"/one flow one port", func(t *testing.T) {
			// The connection table is per CPU: pin so that packets after
			// the SYN hit the entry the SYN made.
			testenv.LockAnyCPU(t)
			l := newLB(t, Options{})
			vip := VIP{Addr: fam.vip, Port: 80, Proto: l4.TCP}
			addVIP(t, l, vip, VIPOptions{}, fam.backend...)
			f := encIn(fam.client(7), fam.vip, 80, true)
			want := encGUESport(modelFlowHash(f.Src, f.Dst, testConfig().Seed))
			before := readCounters(t, l)
			var ipBytes uint64
			for i := range 10 {
				flags := pkttest.ACK
				if i == 0 {
					flags = pkttest.SYN
				}
				in := pkttest.TCP(f, flags)
				ipBytes += uint64(len(pkttest.IPPacket(in)))
				res := pkttest.Run(t, l.Program(), in)
				if res.Verdict != pkttest.XDPTX {
					t.Fatalf("packet %d: verdict %v, want %v", i, res.Verdict, pkttest.XDPTX)
				}
				if _, sport, _ := encOuterFields(t, res.Packet); sport != want {
					t.Errorf("packet %d: outer source port %d, want %d", i, sport, want)
				}
			}
			after := readCounters(t, l)
			checkStats(t, before, after, map[string]uint64{
				"tx": 10, "encap_gue": 10, "conn_miss": 1, "conn_miss_syn": 1, "conn_hit": 9,
			})
			encCheckTraffic(t, before, after, vip, fam.backend[0].Addr, 10, ipBytes)
		})
	}
}

// TestEncapRejectsIPv4BackendOfIPv6VIP checks that IPv6 cannot be sent over
// IPv4, that the whole set is refused, and that the VIP keeps serving from
// its previous backends.
func TestEncapRejectsIPv4BackendOfIPv6VIP(t *testing.T) {
	prev := []Backend{be("fd00:1::5")}
	for _, c := range []struct {
		name string
		set  []Backend
	}{
		{"only an ipv4 backend", []Backend{be("10.1.0.5")}},
		{"an ipv4 backend among ipv6 ones", []Backend{be("fd00:1::6"), be("10.1.0.5"), be("fd00:1::7")}},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := newLB(t, Options{})
			addVIP(t, l, encTCP6, VIPOptions{}, prev...)
			err := l.SetBackends(encTCP6, c.set)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("set backends %v: error %v, want ErrInvalid", c.set, err)
			}
			for _, part := range []string{"10.1.0.5", encVIP6.String(), "IPv6"} {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("error %q does not mention %q", err, part)
				}
			}
			got, err := l.Backends(encTCP6)
			if err != nil {
				t.Fatalf("backends: %v", err)
			}
			if !slices.Equal(got, prev) {
				t.Errorf("backends after the rejected set: %v, want %v", got, prev)
			}

			f := encIn(encClient6, encVIP6, 80, false)
			in := pkttest.TCP(f, pkttest.SYN)
			before := readCounters(t, l)
			res := pkttest.Run(t, l.Program(), in)
			after := readCounters(t, l)
			if res.Verdict != pkttest.XDPTX {
				t.Fatalf("verdict %v, want %v", res.Verdict, pkttest.XDPTX)
			}
			cfg := encConfig(encCase{})
			h := modelFlowHash(f.Src, f.Dst, cfg.Seed)
			want := encOuter{in: f, inner: pkttest.IPPacket(in), backend: prev[0].Addr, hash: h, cfg: cfg}.frame()
			pkttest.Expect(t, want, res.Out)
			pkttest.VerifyChecksums(t, res.Packet)
			checkStats(t, before, after, encWantStats(t, in, false))
			encCheckTraffic(t, before, after, encTCP6, prev[0].Addr, 1, uint64(len(pkttest.IPPacket(in))))
		})
	}
}
