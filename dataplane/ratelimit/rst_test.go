package ratelimit

import (
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/dataplane/police"
	"github.com/sluice-dp/sluice/internal/pkttest"
)

// exhausted makes the aggregate limit of the rule of m refuse every SYN
// until its current window ends: the estimate is at least cur = the budget.
// Tests use one-minute windows, counted from the rule's creation just
// before.
func exhausted(t testing.TB, l *Limiter, m Match) {
	t.Helper()
	r := installedRule(t, l, m).rule
	limit := uint64(r.Rate) * uint64(r.Window) / uint64(time.Second)
	setAggregate(t, l, m, windowState{idx: windowAt(t, l, m, clock(t)), prev: limit, cur: limit})
}

// The RST a refused SYN gets, whatever carried the SYN: plain, tagged,
// inside any of the LB's encapsulations, with options and payload. The
// expected reply is built with gopacket from RFC 9293's rules.
func TestRSTConstruction(t *testing.T) {
	web := Match{Port: 80, Proto: l4.TCP}
	vip80 := netip.AddrPortFrom(vip4, 80)
	vip680 := netip.AddrPortFrom(vip6, 80)
	lb4 := netip.MustParseAddrPort("10.0.0.2:49200")
	host4 := netip.MustParseAddrPort("10.1.0.5:6080")
	lb6 := netip.MustParseAddrPort("[fd00::2]:49200")
	host6 := netip.MustParseAddrPort("[fd00::5]:6080")
	payload := []byte("0123456789")

	cases := []struct {
		name  string
		in    func(t *testing.T) []byte
		want  func(t *testing.T) []byte
		encap bool
	}{
		{
			name: "ipv4",
			in:   func(*testing.T) []byte { return syn(client4, vip80) },
			want: func(t *testing.T) []byte { return rst(t, vip80, client4, 0, 2) },
		},
		{
			name: "ipv6",
			in:   func(*testing.T) []byte { return syn(client6, vip680) },
			want: func(t *testing.T) []byte { return rst(t, vip680, client6, 0, 2) },
		},
		{
			name: "vlan ipv4",
			in: func(*testing.T) []byte {
				return pkttest.TCP(pkttest.Flow{VLAN: 100, Src: client4, Dst: vip80}, pkttest.SYN)
			},
			want: func(t *testing.T) []byte { return rst(t, vip80, client4, 100, 2) },
		},
		{
			name: "vlan ipv6",
			in: func(*testing.T) []byte {
				return pkttest.TCP(pkttest.Flow{VLAN: 4094, Src: client6, Dst: vip680}, pkttest.SYN)
			},
			want: func(t *testing.T) []byte { return rst(t, vip680, client6, 4094, 2) },
		},
		{
			name: "gue ipv4 in ipv4",
			in: func(*testing.T) []byte {
				return pkttest.GUE(pkttest.Flow{Src: lb4, Dst: host4}, pkttest.IPPacket(syn(client4, vip80)))
			},
			want:  func(t *testing.T) []byte { return rst(t, vip80, client4, 0, 2) },
			encap: true,
		},
		{
			name: "gue ipv6 in ipv4 with vlan",
			in: func(*testing.T) []byte {
				return pkttest.GUE(pkttest.Flow{VLAN: 7, Src: lb4, Dst: host4}, pkttest.IPPacket(syn(client6, vip680)))
			},
			want:  func(t *testing.T) []byte { return rst(t, vip680, client6, 7, 2) },
			encap: true,
		},
		{
			name: "gue ipv4 in ipv6",
			in: func(*testing.T) []byte {
				return pkttest.GUE(pkttest.Flow{Src: lb6, Dst: host6}, pkttest.IPPacket(syn(client4, vip80)))
			},
			want:  func(t *testing.T) []byte { return rst(t, vip80, client4, 0, 2) },
			encap: true,
		},
		{
			name: "gue variant 0 with an option word",
			in: func(*testing.T) []byte {
				// version 0, C 0, hlen 1 word; proto 4 (IPv4); flags; one option word
				hdr := []byte{0x01, 4, 0, 0, 0xde, 0xad, 0xbe, 0xef}
				return pkttest.UDP(pkttest.Flow{Src: lb4, Dst: host4,
					Payload: append(hdr, pkttest.IPPacket(syn(client4, vip80))...)})
			},
			want:  func(t *testing.T) []byte { return rst(t, vip80, client4, 0, 2) },
			encap: true,
		},
		{
			name: "ipip",
			in: func(*testing.T) []byte {
				return pkttest.IPIP(pkttest.Flow{Src: lb4, Dst: host4}, pkttest.IPPacket(syn(client4, vip80)))
			},
			want:  func(t *testing.T) []byte { return rst(t, vip80, client4, 0, 2) },
			encap: true,
		},
		{
			name: "ip6ip6",
			in: func(*testing.T) []byte {
				return pkttest.IPIP(pkttest.Flow{Src: lb6, Dst: host6}, pkttest.IPPacket(syn(client6, vip680)))
			},
			want:  func(t *testing.T) []byte { return rst(t, vip680, client6, 0, 2) },
			encap: true,
		},
		{
			name: "options and payload, ack wraps",
			in: func(t *testing.T) []byte {
				return synWith(t, pkttest.Flow{Src: client4, Dst: vip80}, 0xfffffffa, false, payload)
			},
			// 0xfffffffa + 1 (SYN) + 10 (payload), modulo 2^32
			want: func(t *testing.T) []byte { return rst(t, vip80, client4, 0, 5) },
		},
		{
			name: "ipv6 options, payload and fin",
			in: func(t *testing.T) []byte {
				return synWith(t, pkttest.Flow{Src: client6, Dst: vip680}, 1000, true, payload)
			},
			// 1000 + 1 (SYN) + 10 (payload) + 1 (FIN)
			want: func(t *testing.T) []byte { return rst(t, vip680, client6, 0, 1012) },
		},
		{
			name: "ipv4 options and ethernet padding",
			in: func(t *testing.T) []byte {
				hs := pkttest.Flow{Src: client4, Dst: vip80}.Headers(layers.IPProtocolTCP)
				hs[len(hs)-1].(*layers.IPv4).Options = []layers.IPv4Option{
					{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0},
				}
				f := pkttest.Serialize(t, append(hs, &layers.TCP{
					SrcPort: layers.TCPPort(client4.Port()), DstPort: 80, Seq: 77, SYN: true, Window: 1024,
				})...)
				return append(f, make([]byte, 6)...)
			},
			want: func(t *testing.T) []byte { return rst(t, vip80, client4, 0, 78) },
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newLimiter(t, Rule{Match: web, Rate: 1, Window: time.Minute, Action: police.RST})
			exhausted(t, l, web)
			in := c.in(t)
			before := counters(t, l)
			res := run(t, l, in, pkttest.XDPTX)
			pkttest.Expect(t, c.want(t), res.Out)
			pkttest.VerifyChecksums(t, res.Packet)
			want := map[string]uint64{"packets": 1, "tx": 1, "refused": 1, "rst_sent": 1}
			if c.encap {
				want["encap"] = 1
			}
			after := counters(t, l)
			pkttest.ExpectDeltas(t, before.Stats, after.Stats, want)
			if got := after.Rules[web].Aggregate; got != (Scope{Seen: 1, Refused: 1}) {
				t.Errorf("aggregate scope counters %+v, want one seen and refused", got)
			}
		})
	}
}

// Refused with the default action, a SYN is dropped and nothing is sent.
func TestDropAction(t *testing.T) {
	web := Match{Port: 80, Proto: l4.TCP}
	l := newLimiter(t, Rule{Match: web, Rate: 1, Window: time.Minute})
	exhausted(t, l, web)
	before := counters(t, l)
	run(t, l, syn(client4, netip.AddrPortFrom(vip4, 80)), pkttest.XDPDrop)
	pkttest.ExpectDeltas(t, before.Stats, counters(t, l).Stats,
		map[string]uint64{"packets": 1, "drop": 1, "refused": 1})
}
