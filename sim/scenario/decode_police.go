package scenario

import (
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sluice-dp/sluice/dataplane/connlimit"
	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/dataplane/police"
	"github.com/sluice-dp/sluice/dataplane/ratelimit"
	"github.com/sluice-dp/sluice/sim/traffic"
)

// This file decodes the keys of the policing programs and their chains
// (ratelimit:, connlimit:, chains:), and the connection loads (connect:,
// hold:) that exercise them.

// choice decodes one of names into the value at the same index of
// values.
func choice[T any](d *decoder, n *yaml.Node, path string, names []string, values []T, dst *T) {
	var s string
	d.str(n, path, &s)
	i := slices.Index(names, s)
	if i < 0 {
		d.fail(n, path, "%q: want %s", s, strings.Join(names, " or "))
		return
	}
	*dst = values[i]
}

// maxHold bounds hold[].count: every held connection keeps a socket, a
// file descriptor and an ephemeral port of its node.
const maxHold = 10_000

func (d *decoder) rateLimit(n *yaml.Node, path string, s *RateLimitSpec) {
	d.mapping(n, path, map[string]field{
		"rules": {true, func(n *yaml.Node, p string) {
			seen := map[ratelimit.Match]bool{}
			d.seq(n, p, func(n *yaml.Node, p string) {
				r, ok := d.rateRule(n, p)
				if !ok {
					return
				}
				if seen[r.Match] {
					d.fail(n, p, "a rule for %v exists already", r.Match)
				}
				seen[r.Match] = true
				s.Rules = append(s.Rules, r)
			})
			if n.Kind == yaml.SequenceNode && len(n.Content) == 0 {
				d.fail(n, p, "want at least one rule")
			}
		}},
	})
}

// rateRule decodes one rule and checks it as ratelimit.SetRules would, so
// that the error has a line.
func (d *decoder) rateRule(n *yaml.Node, path string) (ratelimit.Rule, bool) {
	r := ratelimit.Rule{Match: ratelimit.Match{Proto: l4.TCP}, Window: ratelimit.DefaultWindow,
		SourcePrefixV4: ratelimit.DefaultSourcePrefixV4, SourcePrefixV6: ratelimit.DefaultSourcePrefixV6}
	before := len(d.errs)
	rate := func(dst *uint32) func(n *yaml.Node, p string) {
		return func(n *yaml.Node, p string) {
			v, _ := d.uint(n, p, math.MaxUint32)
			*dst = uint32(v)
		}
	}
	ok := d.mapping(n, path, map[string]field{
		"dst": {true, func(n *yaml.Node, p string) { d.rateMatch(n, p, &r.Match) }},
		"proto": {false, func(n *yaml.Node, p string) {
			choice(d, n, p, []string{"tcp", "udp"}, []l4.Proto{l4.TCP, l4.UDP}, &r.Proto)
		}},
		"rate":             {false, rate(&r.Rate)},
		"source_rate":      {false, rate(&r.SourceRate)},
		"source_prefix_v4": {false, func(n *yaml.Node, p string) { d.intIn(n, p, 1, 32, &r.SourcePrefixV4) }},
		"source_prefix_v6": {false, func(n *yaml.Node, p string) { d.intIn(n, p, 1, 128, &r.SourcePrefixV6) }},
		"window":           {false, func(n *yaml.Node, p string) { d.duration(n, p, &r.Window) }},
		"action": {false, func(n *yaml.Node, p string) {
			choice(d, n, p, []string{"drop", "rst"}, []police.Action{police.Drop, police.RST}, &r.Action)
		}},
	})
	if !ok || len(d.errs) > before {
		return r, false
	}
	if err := r.Validate(); err != nil {
		d.fail(n, path, "%v", err)
	}
	return r, len(d.errs) == before
}

// rateMatch decodes a rule's destination: any, a port, an address, or
// address:port.
func (d *decoder) rateMatch(n *yaml.Node, path string, m *ratelimit.Match) {
	s, ok := d.scalar(n, path, "a destination")
	if !ok {
		return
	}
	bad := func() {
		d.fail(n, path, "%q: want any, a port (80), an address (192.0.2.10, 2001:db8::10) or address:port (192.0.2.10:80, [2001:db8::10]:80)", s)
	}
	if s == "any" {
		return
	}
	if p, err := strconv.ParseUint(s, 10, 16); err == nil {
		if p == 0 {
			bad()
		}
		m.Port = uint16(p)
		return
	}
	var a netip.Addr
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 {
			bad()
			return
		}
		a, m.Port = ap.Addr(), ap.Port()
	} else if a, err = netip.ParseAddr(s); err != nil {
		bad()
		return
	}
	if a.Zone() != "" || a.Is4In6() || a.IsUnspecified() {
		bad()
		return
	}
	m.Addr = a
}

func (d *decoder) connLimit(n *yaml.Node, path string, s *ConnLimitSpec) {
	s.Ports = map[uint16]connlimit.Limit{}
	d.mapping(n, path, map[string]field{
		"ports": {true, func(n *yaml.Node, p string) {
			d.seq(n, p, func(n *yaml.Node, p string) {
				var port uint16
				l := connlimit.Limit{Action: police.Drop}
				d.mapping(n, p, map[string]field{
					"port": {true, func(n *yaml.Node, p string) {
						if v, ok := d.uint(n, p, math.MaxUint16); ok {
							if v == 0 {
								d.fail(n, p, "0: want a port from 1 to 65535")
							}
							port = uint16(v)
						}
					}},
					"max": {true, func(n *yaml.Node, p string) {
						if v, ok := d.uint(n, p, math.MaxUint32); ok {
							if v == 0 {
								d.fail(n, p, "0: want at least 1 connection")
							}
							l.Max = uint32(v)
						}
					}},
					"action": {false, func(n *yaml.Node, p string) {
						choice(d, n, p, []string{"drop", "rst"}, []police.Action{police.Drop, police.RST}, &l.Action)
					}},
				})
				if port == 0 {
					return
				}
				if _, dup := s.Ports[port]; dup {
					d.fail(n, p, "port %d limited twice", port)
				}
				s.Ports[port] = l
			})
			if n.Kind == yaml.SequenceNode && len(n.Content) == 0 {
				d.fail(n, p, "want at least one port")
			}
		}},
	})
}

func (d *decoder) chainSpec(n *yaml.Node, path string, sc *Scenario) {
	sc.Chains = append(sc.Chains, d.chain(n, path))
}

// chain decodes {attach: node/iface, programs: [...]}, in chains: and in
// chain events.
func (d *decoder) chain(n *yaml.Node, path string) ChainSpec {
	var c ChainSpec
	d.mapping(n, path, map[string]field{
		"attach":   {true, func(n *yaml.Node, p string) { c.Attach, _ = d.iface(n, p) }},
		"programs": {true, func(n *yaml.Node, p string) { c.Programs = d.programs(n, p) }},
	})
	return c
}

// programs decodes a list of chain program names, each at most once.
func (d *decoder) programs(n *yaml.Node, path string) []string {
	var out []string
	if n.Kind != yaml.SequenceNode {
		d.fail(n, path, "want a list of programs: %s, %s, %s", ProgRateLimit, ProgConnLimit, ProgLB)
		return nil
	}
	d.seq(n, path, func(n *yaml.Node, p string) {
		var s string
		d.str(n, p, &s)
		switch {
		case s != ProgRateLimit && s != ProgConnLimit && s != ProgLB:
			d.fail(n, p, "%q: want one of %s, %s, %s", s, ProgRateLimit, ProgConnLimit, ProgLB)
		case contains(out, s):
			d.fail(n, p, "%s listed twice", s)
		default:
			out = append(out, s)
		}
	})
	return out
}

// connectTimeout decodes a connection attempt's timeout, which must stay
// below the SYN retransmission time.
func (d *decoder) connectTimeout(n *yaml.Node, path string, dst *time.Duration) {
	var v time.Duration
	d.duration(n, path, &v)
	if v >= traffic.SYNRetransmit {
		d.fail(n, path, "%v: want less than %v, the SYN retransmission time, so that an attempt sends one SYN", v, traffic.SYNRetransmit)
		return
	}
	if v > 0 {
		*dst = v
	}
}

func (d *decoder) connDst(n *yaml.Node, path string, dst *netip.AddrPort) {
	var ok bool
	if *dst, ok = d.addrPort(n, path); ok && dst.Port() == 0 {
		d.fail(n, path, "%v: want a port other than 0", *dst)
	}
}

func (d *decoder) connect(n *yaml.Node, path string, st *Step) {
	c := ConnectLoad{Timeout: traffic.DefaultConnectTimeout}
	d.mapping(n, path, map[string]field{
		"from": {true, func(n *yaml.Node, p string) { d.str(n, p, &c.From) }},
		"dst":  {true, func(n *yaml.Node, p string) { d.connDst(n, p, &c.Dst) }},
		"rate": {true, func(n *yaml.Node, p string) { d.intIn(n, p, 1, traffic.MaxConnectRate, &c.Rate) }},
		"duration": {true, func(n *yaml.Node, p string) {
			d.duration(n, p, &c.Duration)
			if c.Duration > traffic.MaxConnectDuration {
				d.fail(n, p, "%v: want at most %v", c.Duration, traffic.MaxConnectDuration)
			}
		}},
		"timeout": {false, func(n *yaml.Node, p string) { d.connectTimeout(n, p, &c.Timeout) }},
	})
	st.Connect = append(st.Connect, c)
}

func (d *decoder) hold(n *yaml.Node, path string, st *Step) {
	h := HoldSpec{Timeout: traffic.DefaultConnectTimeout}
	d.mapping(n, path, map[string]field{
		"name":    {true, func(n *yaml.Node, p string) { d.str(n, p, &h.Name) }},
		"from":    {true, func(n *yaml.Node, p string) { d.str(n, p, &h.From) }},
		"dst":     {true, func(n *yaml.Node, p string) { d.connDst(n, p, &h.Dst) }},
		"count":   {true, func(n *yaml.Node, p string) { d.intIn(n, p, 1, maxHold, &h.Count) }},
		"timeout": {false, func(n *yaml.Node, p string) { d.connectTimeout(n, p, &h.Timeout) }},
	})
	st.Hold = append(st.Hold, h)
}
