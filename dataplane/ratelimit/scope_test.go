package ratelimit

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/internal/pkttest"
)

// Scope tests use a one-minute window with a rate of 1 to 3 per second, so
// budgets are 60 to 180 connections, all sent within a few milliseconds of
// the rule's creation, where its first window begins.

// sendSYNs sends n SYNs from src to dst and returns how many were admitted
// (passed); every other one must have been dropped.
func sendSYNs(t *testing.T, l *Limiter, src, dst netip.AddrPort, n int) int {
	t.Helper()
	frame := syn(src, dst)
	admitted := 0
	for range n {
		switch v := pkttest.Run(t, l.Program(), frame).Verdict; v {
		case pkttest.XDPPass:
			admitted++
		case pkttest.XDPDrop:
		default:
			t.Fatalf("verdict %v, want pass or drop", v)
		}
	}
	return admitted
}

func TestAggregateScope(t *testing.T) {
	web := Match{Addr: vip4, Port: 80, Proto: l4.TCP}
	l := newLimiter(t, Rule{Match: web, Rate: 1, Window: time.Minute})
	dst := netip.AddrPortFrom(vip4, 80)
	other := netip.MustParseAddrPort("203.0.113.9:5000")
	// Two sources share the destination's budget of 60.
	if got := sendSYNs(t, l, client4, dst, 40); got != 40 {
		t.Errorf("first source: %d of 40 admitted, want all", got)
	}
	if got := sendSYNs(t, l, other, dst, 40); got != 20 {
		t.Errorf("second source: %d of 40 admitted, want the 20 left", got)
	}
	c := counters(t, l).Rules[web]
	want := RuleCounters{
		Rule:      Scope{Seen: 80, Admitted: 60, Refused: 20},
		Aggregate: Scope{Seen: 80, Admitted: 60, Refused: 20},
	}
	if c != want {
		t.Errorf("counters %+v, want %+v", c, want)
	}
}

func TestSourceScope(t *testing.T) {
	web := Match{Addr: vip4, Port: 80, Proto: l4.TCP}
	l := newLimiter(t, Rule{Match: web, SourceRate: 1, Window: time.Minute})
	dst := netip.AddrPortFrom(vip4, 80)
	other := netip.MustParseAddrPort("203.0.113.9:5000")
	// Each source has its own budget of 60: the first one's excess does
	// not cost the second anything.
	if got := sendSYNs(t, l, client4, dst, 70); got != 60 {
		t.Errorf("first source: %d of 70 admitted, want 60", got)
	}
	if got := sendSYNs(t, l, other, dst, 70); got != 60 {
		t.Errorf("second source: %d of 70 admitted, want 60", got)
	}
	c := counters(t, l).Rules[web]
	want := RuleCounters{
		Rule:   Scope{Seen: 140, Admitted: 120, Refused: 20},
		Source: Scope{Seen: 140, Admitted: 120, Refused: 20},
	}
	if c != want {
		t.Errorf("counters %+v, want %+v", c, want)
	}
}

// Both scopes: a SYN must pass both. A SYN the aggregate refuses after its
// source admitted it is taken back from the source's count.
func TestBothScopes(t *testing.T) {
	web := Match{Addr: vip4, Port: 80, Proto: l4.TCP}
	l := newLimiter(t, Rule{Match: web, Rate: 3, SourceRate: 2, Window: time.Minute})
	dst := netip.AddrPortFrom(vip4, 80)
	other := netip.MustParseAddrPort("203.0.113.9:5000")
	// A: 120 by its source budget, 1 refused by it. B: 60 until the
	// aggregate's 180 are used, then 61 refused by the aggregate.
	if got := sendSYNs(t, l, client4, dst, 121); got != 120 {
		t.Errorf("first source: %d of 121 admitted, want 120", got)
	}
	if got := sendSYNs(t, l, other, dst, 121); got != 60 {
		t.Errorf("second source: %d of 121 admitted, want 60", got)
	}
	c := counters(t, l).Rules[web]
	want := RuleCounters{
		Rule:      Scope{Seen: 242, Admitted: 180, Refused: 62},
		Source:    Scope{Seen: 242, Admitted: 241, Refused: 1},
		Aggregate: Scope{Seen: 241, Admitted: 180, Refused: 61},
	}
	if c != want {
		t.Errorf("counters %+v, want %+v", c, want)
	}
	// B's source was charged only for its 60 admitted connections.
	st, ok := getSource(t, l, web, netip.PrefixFrom(other.Addr(), 32))
	if !ok || st.cur+st.prev != 60 {
		t.Errorf("second source state %+v (found %v), want 60 connections counted", st, ok)
	}
	if a := getAggregate(t, l, web); a.cur+a.prev != 180 {
		t.Errorf("aggregate state %+v, want 180 connections counted", a)
	}
}

// Sources in one prefix share a budget; sources in different prefixes do
// not.
func TestSourcePrefixes(t *testing.T) {
	cases := []struct {
		name                string
		rule                Rule
		first, same, differ string
	}{
		{name: "ipv4 /32 default", rule: Rule{},
			first: "198.51.100.7:1000", same: "198.51.100.7:2000", differ: "198.51.100.8:1000"},
		{name: "ipv4 /24", rule: Rule{SourcePrefixV4: 24},
			first: "198.51.100.7:1000", same: "198.51.100.200:1000", differ: "198.51.101.7:1000"},
		{name: "ipv6 /64 default", rule: Rule{},
			first: "[2001:db8:1::7]:1000", same: "[2001:db8:1::ffff:1]:1000", differ: "[2001:db8:2::7]:1000"},
		{name: "ipv6 /48", rule: Rule{SourcePrefixV6: 48},
			first: "[2001:db8:1:1::7]:1000", same: "[2001:db8:1:ffff::7]:1000", differ: "[2001:db8:2::7]:1000"},
		{name: "ipv6 /128", rule: Rule{SourcePrefixV6: 128},
			first: "[2001:db8:1::7]:1000", same: "[2001:db8:1::7]:3000", differ: "[2001:db8:1::8]:1000"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := Match{Port: 80, Proto: l4.TCP}
			r := c.rule
			r.Match, r.SourceRate, r.Window = m, 1, time.Minute
			l := newLimiter(t, r)
			first := netip.MustParseAddrPort(c.first)
			dst := netip.AddrPortFrom(vip4, 80)
			if first.Addr().Is6() {
				dst = netip.AddrPortFrom(vip6, 80)
			}
			if got := sendSYNs(t, l, first, dst, 60); got != 60 {
				t.Fatalf("%d of 60 admitted from %v, want all", got, first)
			}
			if got := sendSYNs(t, l, netip.MustParseAddrPort(c.same), dst, 1); got != 0 {
				t.Errorf("%s was admitted: it shares %s's exhausted budget", c.same, c.first)
			}
			if got := sendSYNs(t, l, netip.MustParseAddrPort(c.differ), dst, 1); got != 1 {
				t.Errorf("%s was refused: its prefix has a budget of its own", c.differ)
			}
		})
	}
}

// The most specific rule of the destination applies: address and port,
// address, port, any; each protocol has its own rules.
func TestRuleMatching(t *testing.T) {
	addrPort := Match{Addr: vip4, Port: 80, Proto: l4.TCP}
	addr := Match{Addr: vip4, Proto: l4.TCP}
	port := Match{Port: 80, Proto: l4.TCP}
	anyTCP := Match{Proto: l4.TCP}
	udpAddrPort := Match{Addr: vip4, Port: 53, Proto: l4.UDP}
	addr6 := Match{Addr: vip6, Port: 443, Proto: l4.TCP}
	var rules []Rule
	for _, m := range []Match{addrPort, addr, port, anyTCP, udpAddrPort, addr6} {
		rules = append(rules, Rule{Match: m, Rate: 1000})
	}
	l := newLimiter(t, rules...)
	other4 := netip.MustParseAddr("192.0.2.99")
	udp := func(dst netip.AddrPort) []byte { return pkttest.UDP(pkttest.Flow{Src: client4, Dst: dst}) }
	cases := []struct {
		name  string
		frame []byte
		want  *Match
	}{
		{"address and port", syn(client4, netip.AddrPortFrom(vip4, 80)), &addrPort},
		{"address", syn(client4, netip.AddrPortFrom(vip4, 443)), &addr},
		{"port", syn(client4, netip.AddrPortFrom(other4, 80)), &port},
		{"any", syn(client4, netip.AddrPortFrom(other4, 443)), &anyTCP},
		{"ipv6 address and port", syn(client6, netip.AddrPortFrom(vip6, 443)), &addr6},
		{"ipv6 takes the port rule", syn(client6, netip.AddrPortFrom(vip6, 80)), &port},
		{"udp address and port", udp(netip.AddrPortFrom(vip4, 53)), &udpAddrPort},
		{"udp without a rule", udp(netip.AddrPortFrom(vip4, 54)), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := counters(t, l)
			run(t, l, c.frame, pkttest.XDPPass)
			after := counters(t, l)
			for m, rc := range after.Rules {
				moved := rc.Rule.Seen - before.Rules[m].Rule.Seen
				want := uint64(0)
				if c.want != nil && m == *c.want {
					want = 1
				}
				if moved != want {
					t.Errorf("rule %v saw %d connections, want %d", m, moved, want)
				}
			}
			if c.want == nil {
				pkttest.ExpectDeltas(t, before.Stats, after.Stats,
					map[string]uint64{"packets": 1, "pass": 1, "pass_no_rule": 1})
			}
		})
	}
}
