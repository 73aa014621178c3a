package scenario

import (
	"fmt"
	"math"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sluice-dp/sluice/dataplane/agent"
	"github.com/sluice-dp/sluice/dataplane/lb"
	"github.com/sluice-dp/sluice/sim/traffic"
)

// This file maps every key of the scenario format (docs/scenarios.md) to
// its decoder.

func (d *decoder) scenario(n *yaml.Node, sc *Scenario) {
	d.mapping(n, "", map[string]field{
		"name":        {true, func(n *yaml.Node, p string) { d.str(n, p, &sc.Name) }},
		"description": {true, func(n *yaml.Node, p string) { d.str(n, p, &sc.Description) }},
		"nodes":       {true, func(n *yaml.Node, p string) { d.nodes(n, p, sc) }},
		"links":       {true, func(n *yaml.Node, p string) { d.seq(n, p, func(n *yaml.Node, p string) { d.link(n, p, sc) }) }},
		"routes":      {false, func(n *yaml.Node, p string) { d.seq(n, p, func(n *yaml.Node, p string) { d.route(n, p, sc) }) }},
		"lb":          {false, func(n *yaml.Node, p string) { sc.LB = &LBSpec{}; d.lb(n, p, sc.LB) }},
		"agents":      {false, func(n *yaml.Node, p string) { d.seq(n, p, func(n *yaml.Node, p string) { d.agent(n, p, sc) }) }},
		"services":    {false, func(n *yaml.Node, p string) { d.seq(n, p, func(n *yaml.Node, p string) { d.service(n, p, sc) }) }},
		"ratelimit":   {false, func(n *yaml.Node, p string) { sc.RateLimit = &RateLimitSpec{}; d.rateLimit(n, p, sc.RateLimit) }},
		"connlimit":   {false, func(n *yaml.Node, p string) { sc.ConnLimit = &ConnLimitSpec{}; d.connLimit(n, p, sc.ConnLimit) }},
		"chains":      {false, func(n *yaml.Node, p string) { d.seq(n, p, func(n *yaml.Node, p string) { d.chainSpec(n, p, sc) }) }},
		"steps":       {true, func(n *yaml.Node, p string) { d.seq(n, p, func(n *yaml.Node, p string) { d.step(n, p, sc) }) }},
	})
}

// nodes is a mapping from node name to its settings, so that names are
// unique by construction and read as in `ip netns list`.
func (d *decoder) nodes(n *yaml.Node, path string, sc *Scenario) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "want a mapping from node name to {role: ...}")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		p := join(path, k.Value)
		if !nodeNameRE.MatchString(k.Value) {
			d.fail(k, p, "node name %q: want 1-32 of a-z, 0-9 and '-', starting with a letter or digit", k.Value)
			continue
		}
		node := Node{Name: k.Value}
		d.mark(p, k)
		d.mapping(v, p, map[string]field{
			"role": {true, func(n *yaml.Node, p string) {
				var s string
				d.str(n, p, &s)
				switch r := Role(s); r {
				case RoleClient, RoleRouter, RoleLB, RoleBackend, RoleServer, RoleVM:
					node.Role = r
				default:
					d.fail(n, p, "%q: want one of client, router, lb, backend, server, vm", s)
				}
			}},
			"sysctls": {false, func(n *yaml.Node, p string) {
				if n.Kind != yaml.MappingNode {
					d.fail(n, p, "want a mapping from net.* sysctl name to value")
					return
				}
				for j := 0; j+1 < len(n.Content); j += 2 {
					name, val := n.Content[j], n.Content[j+1]
					if !sysctlRE.MatchString(name.Value) {
						d.fail(name, join(p, name.Value), "want a net.* sysctl name (net.ipv4.ip_forward): others are not per namespace")
						continue
					}
					if s, ok := d.scalar(val, join(p, name.Value), "a value"); ok {
						node.Sysctls = append(node.Sysctls, [2]string{name.Value, s})
					}
				}
			}},
		})
		sc.Nodes = append(sc.Nodes, node)
	}
}

func (d *decoder) linkEnd(n *yaml.Node, path string, e *LinkEnd) {
	d.mapping(n, path, map[string]field{
		"node":  {true, func(n *yaml.Node, p string) { d.str(n, p, &e.Node) }},
		"iface": {false, func(n *yaml.Node, p string) { d.str(n, p, &e.Iface) }},
		"mac":   {false, func(n *yaml.Node, p string) { d.mac(n, p, &e.MAC) }},
		"addrs": {false, func(n *yaml.Node, p string) {
			d.seqOrOne(n, p, func(n *yaml.Node, p string) {
				if a, ok := d.prefix(n, p); ok {
					e.Addrs = append(e.Addrs, a)
				}
			})
		}},
		"queues": {false, func(n *yaml.Node, p string) { d.intIn(n, p, 1, 64, &e.Queues) }},
		"mtu":    {false, func(n *yaml.Node, p string) { d.intIn(n, p, 1280, 9000, &e.MTU) }},
	})
}

func (d *decoder) link(n *yaml.Node, path string, sc *Scenario) {
	var l Link
	d.mapping(n, path, map[string]field{
		"a": {true, func(n *yaml.Node, p string) { d.linkEnd(n, p, &l.A) }},
		"b": {true, func(n *yaml.Node, p string) { d.linkEnd(n, p, &l.B) }},
	})
	sc.Links = append(sc.Links, l)
}

func (d *decoder) route(n *yaml.Node, path string, sc *Scenario) {
	var r Route
	d.mapping(n, path, map[string]field{
		"node": {true, func(n *yaml.Node, p string) { d.str(n, p, &r.Node) }},
		"dst":  {true, func(n *yaml.Node, p string) { r.Dst, _ = d.prefix(n, p) }},
		"via": {true, func(n *yaml.Node, p string) {
			d.seqOrOne(n, p, func(n *yaml.Node, p string) {
				if a, ok := d.addr(n, p); ok {
					r.Via = append(r.Via, a)
				}
			})
		}},
	})
	sc.Routes = append(sc.Routes, r)
}

func (d *decoder) lb(n *yaml.Node, path string, s *LBSpec) {
	d.mapping(n, path, map[string]field{
		"seed": {false, func(n *yaml.Node, p string) { s.Seed, _ = d.uint(n, p, math.MaxUint64) }},
		"ring_size": {false, func(n *yaml.Node, p string) {
			v, _ := d.uint(n, p, math.MaxUint32)
			s.RingSize = uint32(v)
		}},
		"tunnel_mtu": {false, func(n *yaml.Node, p string) { d.intIn(n, p, 1328, 65535, &s.TunnelMTU) }},
		"gue_port": {false, func(n *yaml.Node, p string) {
			v, _ := d.uint(n, p, math.MaxUint16)
			s.GUEPort = uint16(v)
		}},
		"attach": {true, func(n *yaml.Node, p string) { d.ifaces(n, p, &s.Attach) }},
		"vips":   {true, func(n *yaml.Node, p string) { d.seq(n, p, func(n *yaml.Node, p string) { d.vipSpec(n, p, s) }) }},
	})
}

func (d *decoder) vipSpec(n *yaml.Node, path string, s *LBSpec) {
	var v VIPSpec
	d.mapping(n, path, map[string]field{
		"vip": {true, func(n *yaml.Node, p string) { v.VIP, _ = d.vip(n, p) }},
		"encap": {false, func(n *yaml.Node, p string) {
			var e string
			d.str(n, p, &e)
			switch e {
			case "gue":
				v.Options.Encap = lb.GUE
			case "ipip":
				v.Options.Encap = lb.IPIP
			default:
				d.fail(n, p, "%q: want gue or ipip", e)
			}
		}},
		"source_hash": {false, func(n *yaml.Node, p string) { d.boolean(n, p, &v.Options.SourceHash) }},
		"stateless":   {false, func(n *yaml.Node, p string) { d.boolean(n, p, &v.Options.Stateless) }},
		"backends":    {true, func(n *yaml.Node, p string) { d.backends(n, p, &v.Backends) }},
	})
	s.VIPs = append(s.VIPs, v)
}

func (d *decoder) agent(n *yaml.Node, path string, sc *Scenario) {
	var a AgentSpec
	d.mapping(n, path, map[string]field{
		"attach": {true, func(n *yaml.Node, p string) { a.Attach, _ = d.iface(n, p) }},
		"backends": {false, func(n *yaml.Node, p string) {
			d.seqOrOne(n, p, func(n *yaml.Node, p string) {
				if x, ok := d.addr(n, p); ok {
					a.Backends = append(a.Backends, x)
				}
			})
		}},
		"vips": {true, func(n *yaml.Node, p string) {
			d.seq(n, p, func(n *yaml.Node, p string) {
				var v AgentVIP
				d.mapping(n, p, map[string]field{
					"vip": {true, func(n *yaml.Node, p string) { v.VIP, _ = d.vip(n, p) }},
					"mode": {true, func(n *yaml.Node, p string) {
						var m string
						d.str(n, p, &m)
						switch m {
						case "local":
							v.Mode = agent.Local
						case "transparent":
							v.Mode = agent.Transparent
						default:
							d.fail(n, p, "%q: want local or transparent", m)
						}
					}},
					"app": {false, func(n *yaml.Node, p string) { v.App, _ = d.addrPort(n, p) }},
				})
				if n.Kind == yaml.MappingNode && hasKey(n, "app") != (v.Mode == agent.Transparent) {
					d.fail(n, p, "want app: (the application's addr:port) with mode transparent, and only then")
				}
				if v.App.IsValid() && v.VIP.Addr.IsValid() && v.App.Addr().Is4() != v.VIP.Addr.Is4() {
					d.fail(n, p, "app %v: want an address of the VIP's family", v.App)
				}
				a.VIPs = append(a.VIPs, v)
			})
		}},
	})
	sc.Agents = append(sc.Agents, a)
}

func (d *decoder) service(n *yaml.Node, path string, sc *Scenario) {
	var s Service
	d.mapping(n, path, map[string]field{
		"node": {true, func(n *yaml.Node, p string) { d.str(n, p, &s.Node) }},
		"http": {false, func(n *yaml.Node, p string) { s.HTTP, _ = d.addrPort(n, p) }},
		"udp": {false, func(n *yaml.Node, p string) {
			var ok bool
			if s.UDP, ok = d.addrPort(n, p); ok && s.UDP.Port() == 0 {
				d.fail(n, p, "%v: want a port other than 0", s.UDP)
			}
		}},
	})
	if n.Kind == yaml.MappingNode && !hasKey(n, "http") == !hasKey(n, "udp") {
		d.fail(n, path, "want exactly one of http and udp")
	}
	sc.Services = append(sc.Services, s)
}

func (d *decoder) step(n *yaml.Node, path string, sc *Scenario) {
	st := Step{Name: fmt.Sprintf("step %d", len(sc.Steps)+1)}
	d.mapping(n, path, map[string]field{
		"name":    {false, func(n *yaml.Node, p string) { d.str(n, p, &st.Name) }},
		"events":  {false, func(n *yaml.Node, p string) { d.seq(n, p, func(n *yaml.Node, p string) { d.event(n, p, &st) }) }},
		"send":    {false, func(n *yaml.Node, p string) { d.seq(n, p, func(n *yaml.Node, p string) { d.send(n, p, &st) }) }},
		"http":    {false, func(n *yaml.Node, p string) { d.seq(n, p, func(n *yaml.Node, p string) { d.http(n, p, &st) }) }},
		"udp":     {false, func(n *yaml.Node, p string) { d.seq(n, p, func(n *yaml.Node, p string) { d.udp(n, p, &st) }) }},
		"connect": {false, func(n *yaml.Node, p string) { d.seq(n, p, func(n *yaml.Node, p string) { d.connect(n, p, &st) }) }},
		"hold":    {false, func(n *yaml.Node, p string) { d.seq(n, p, func(n *yaml.Node, p string) { d.hold(n, p, &st) }) }},
		"capture": {false, func(n *yaml.Node, p string) { d.ifaces(n, p, &st.Capture) }},
		"settle":  {false, func(n *yaml.Node, p string) { d.duration(n, p, &st.Settle) }},
		"expect":  {false, func(n *yaml.Node, p string) { d.seq(n, p, func(n *yaml.Node, p string) { d.assertion(n, p, &st) }) }},
	})
	sc.Steps = append(sc.Steps, st)
}

// sendKinds are the crafted traffic kinds sim/traffic builds.
var sendKinds = []string{string(traffic.KindTCPSYN), string(traffic.KindTCPACK), string(traffic.KindUDP), string(traffic.KindICMPEcho)}

func (d *decoder) send(n *yaml.Node, path string, st *Step) {
	s := Send{Flows: 1, PacketsPerFlow: 1, SrcPorts: [2]uint16{1024, 65535}}
	d.mapping(n, path, map[string]field{
		"at": {true, func(n *yaml.Node, p string) { s.At, _ = d.iface(n, p) }},
		"kind": {true, func(n *yaml.Node, p string) {
			d.str(n, p, &s.Kind)
			if !contains(sendKinds, s.Kind) {
				d.fail(n, p, "%q: want one of %v", s.Kind, sendKinds)
			}
		}},
		"src": {true, func(n *yaml.Node, p string) { s.Src, _ = d.prefix(n, p) }},
		"src_ports": {false, func(n *yaml.Node, p string) {
			if n.Kind != yaml.SequenceNode || len(n.Content) != 2 {
				d.fail(n, p, "want [first, last], a range of source ports")
				return
			}
			lo, ok1 := d.uint(n.Content[0], p+"[0]", math.MaxUint16)
			hi, ok2 := d.uint(n.Content[1], p+"[1]", math.MaxUint16)
			if ok1 && ok2 && (lo == 0 || lo > hi) {
				d.fail(n, p, "[%d, %d]: want 1 ≤ first ≤ last", lo, hi)
			}
			s.SrcPorts = [2]uint16{uint16(lo), uint16(hi)}
		}},
		"dst":              {true, func(n *yaml.Node, p string) { s.Dst, _ = d.addrPort(n, p) }},
		"flows":            {false, func(n *yaml.Node, p string) { d.intIn(n, p, 1, 1_000_000, &s.Flows) }},
		"packets_per_flow": {false, func(n *yaml.Node, p string) { d.intIn(n, p, 1, 1000, &s.PacketsPerFlow) }},
		"payload":          {false, func(n *yaml.Node, p string) { d.intIn(n, p, 0, 9000, &s.Payload) }},
		"df":               {false, func(n *yaml.Node, p string) { d.boolean(n, p, &s.DF) }},
		"ttl": {false, func(n *yaml.Node, p string) {
			v, _ := d.uint(n, p, math.MaxUint8)
			s.TTL = uint8(v)
		}},
		"seed": {false, func(n *yaml.Node, p string) { s.Seed, _ = d.uint(n, p, math.MaxUint64) }},
	})
	if s.Src.IsValid() && s.Dst.IsValid() && s.Src.Addr().Is4() != s.Dst.Addr().Is4() {
		d.fail(n, path, "src %v and dst %v: want one address family", s.Src, s.Dst)
	}
	st.Send = append(st.Send, s)
}

func (d *decoder) http(n *yaml.Node, path string, st *Step) {
	h := HTTPLoad{Requests: 100, Connections: 4, Timeout: 5 * time.Second}
	d.mapping(n, path, map[string]field{
		"from":        {true, func(n *yaml.Node, p string) { d.str(n, p, &h.From) }},
		"url":         {true, func(n *yaml.Node, p string) { d.str(n, p, &h.URL) }},
		"requests":    {false, func(n *yaml.Node, p string) { d.intIn(n, p, 1, 1_000_000, &h.Requests) }},
		"connections": {false, func(n *yaml.Node, p string) { d.intIn(n, p, 1, 1000, &h.Connections) }},
		"timeout":     {false, func(n *yaml.Node, p string) { d.duration(n, p, &h.Timeout) }},
		"until":       {false, func(n *yaml.Node, p string) { d.str(n, p, &h.Until) }},
	})
	st.HTTP = append(st.HTTP, h)
}

// maxUDPRequests bounds udp[].requests: traffic.UDPRequests opens a
// socket, and so takes an ephemeral port, per request, and Linux's default
// ephemeral range holds about 28,000.
const maxUDPRequests = 20_000

func (d *decoder) udp(n *yaml.Node, path string, st *Step) {
	u := UDPLoad{Requests: 100, Timeout: traffic.DefaultUDPTimeout}
	d.mapping(n, path, map[string]field{
		"from": {true, func(n *yaml.Node, p string) { d.str(n, p, &u.From) }},
		"dst": {true, func(n *yaml.Node, p string) {
			var ok bool
			if u.Dst, ok = d.addrPort(n, p); ok && u.Dst.Port() == 0 {
				d.fail(n, p, "%v: want a port other than 0", u.Dst)
			}
		}},
		"requests": {false, func(n *yaml.Node, p string) { d.intIn(n, p, 1, maxUDPRequests, &u.Requests) }},
		"timeout":  {false, func(n *yaml.Node, p string) { d.duration(n, p, &u.Timeout) }},
	})
	st.UDP = append(st.UDP, u)
}

// hasKey reports whether the mapping n has the key k.
func hasKey(n *yaml.Node, k string) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == k {
			return true
		}
	}
	return false
}

func (d *decoder) upDown(n *yaml.Node, path string, up *bool) {
	var s string
	d.str(n, path, &s)
	switch s {
	case "up":
		*up = true
	case "down":
		*up = false
	default:
		d.fail(n, path, "%q: want up or down", s)
	}
}

func (d *decoder) event(n *yaml.Node, path string, st *Step) {
	var e Event
	d.oneOf(n, path, "event", map[string]field{
		"set_backends": {false, func(n *yaml.Node, p string) {
			e.SetBackends = &SetBackends{}
			d.mapping(n, p, map[string]field{
				"vip":      {true, func(n *yaml.Node, p string) { e.SetBackends.VIP, _ = d.vip(n, p) }},
				"backends": {true, func(n *yaml.Node, p string) { d.backends(n, p, &e.SetBackends.Backends) }},
			})
		}},
		"link": {false, func(n *yaml.Node, p string) {
			e.Link = &LinkState{}
			d.mapping(n, p, map[string]field{
				"iface": {true, func(n *yaml.Node, p string) { e.Link.Iface, _ = d.iface(n, p) }},
				"state": {true, func(n *yaml.Node, p string) { d.upDown(n, p, &e.Link.Up) }},
			})
		}},
		"node": {false, func(n *yaml.Node, p string) {
			e.Node = &NodeState{}
			d.mapping(n, p, map[string]field{
				"name":  {true, func(n *yaml.Node, p string) { d.str(n, p, &e.Node.Node) }},
				"state": {true, func(n *yaml.Node, p string) { d.upDown(n, p, &e.Node.Up) }},
			})
		}},
		"chain": {false, func(n *yaml.Node, p string) {
			c := d.chain(n, p)
			e.Chain = &c
		}},
		"close": {false, func(n *yaml.Node, p string) {
			e.Close = &CloseHold{}
			d.mapping(n, p, map[string]field{
				"hold":  {true, func(n *yaml.Node, p string) { d.str(n, p, &e.Close.Hold) }},
				"count": {false, func(n *yaml.Node, p string) { d.intIn(n, p, 1, maxHold, &e.Close.Count) }},
			})
		}},
	})
	st.Events = append(st.Events, e)
}

func (d *decoder) assertion(n *yaml.Node, path string, st *Step) {
	a := Assertion{Line: n.Line}
	d.oneOf(n, path, "assertion kind", map[string]field{
		"encapsulation": {false, func(n *yaml.Node, p string) {
			c := &EncapCheck{}
			a.Encapsulation = c
			d.mapping(n, p, map[string]field{
				"at": {true, func(n *yaml.Node, p string) { d.ifaces(n, p, &c.At) }},
				"encap": {false, func(n *yaml.Node, p string) {
					var s string
					d.str(n, p, &s)
					switch s {
					case "gue":
						c.Encap = lb.GUE
					case "ipip":
						c.Encap = lb.IPIP
					default:
						d.fail(n, p, "%q: want gue or ipip", s)
					}
				}},
				"outer_ttl": {false, func(n *yaml.Node, p string) {
					v, _ := d.uint(n, p, math.MaxUint8)
					c.OuterTTL = uint8(v)
				}},
			})
		}},
		"distribution": {false, func(n *yaml.Node, p string) {
			c := &DistributionCheck{Tolerance: 0.05}
			a.Distribution = c
			d.mapping(n, p, map[string]field{
				"vip":       {true, func(n *yaml.Node, p string) { c.VIP, _ = d.vip(n, p) }},
				"tolerance": {false, func(n *yaml.Node, p string) { d.fraction(n, p, &c.Tolerance) }},
			})
		}},
		"consistency": {false, func(n *yaml.Node, p string) {
			c := &ConsistencyCheck{}
			a.Consistency = c
			d.mapping(n, p, map[string]field{
				"with": {false, func(n *yaml.Node, p string) {
					d.seqOrOne(n, p, func(n *yaml.Node, p string) {
						var s string
						d.str(n, p, &s)
						c.With = append(c.With, s)
					})
				}},
				"min_lb_nodes": {false, func(n *yaml.Node, p string) { d.intIn(n, p, 1, 1000, &c.MinLBNodes) }},
			})
		}},
		"disruption": {false, func(n *yaml.Node, p string) {
			c := &DisruptionCheck{}
			a.Disruption = c
			d.mapping(n, p, map[string]field{
				"before":    {true, func(n *yaml.Node, p string) { d.str(n, p, &c.Before) }},
				"max_moved": {true, func(n *yaml.Node, p string) { d.fraction(n, p, &c.MaxMoved) }},
			})
		}},
		"counters": {false, func(n *yaml.Node, p string) { a.Counters = d.counters(n, p) }},
		"delivery": {false, func(n *yaml.Node, p string) {
			c := &DeliveryCheck{Status: 200}
			a.Delivery = c
			d.mapping(n, p, map[string]field{
				"min_ok":     {true, func(n *yaml.Node, p string) { d.intIn(n, p, 0, math.MaxInt32, &c.MinOK) }},
				"max_failed": {false, func(n *yaml.Node, p string) { d.intIn(n, p, 0, math.MaxInt32, &c.MaxFailed) }},
				"status":     {false, func(n *yaml.Node, p string) { d.intIn(n, p, 100, 599, &c.Status) }},
				"max_p99":    {false, func(n *yaml.Node, p string) { d.duration(n, p, &c.MaxP99) }},
				"not_served_by": {false, func(n *yaml.Node, p string) {
					d.seqOrOne(n, p, func(n *yaml.Node, p string) {
						var s string
						d.str(n, p, &s)
						c.NotServedBy = append(c.NotServedBy, s)
					})
				}},
			})
		}},
		"no_replies": {false, func(n *yaml.Node, p string) {
			c := &NoRepliesCheck{}
			a.NoReplies = c
			d.mapping(n, p, map[string]field{
				"at": {true, func(n *yaml.Node, p string) { d.ifaces(n, p, &c.At) }},
			})
		}},
		"replies_from_vip": {false, func(n *yaml.Node, p string) {
			c := &RepliesFromVIPCheck{Min: 1}
			a.RepliesFrom = c
			d.mapping(n, p, map[string]field{
				"at": {true, func(n *yaml.Node, p string) { c.At, _ = d.iface(n, p) }},
				"vips": {false, func(n *yaml.Node, p string) {
					d.seqOrOne(n, p, func(n *yaml.Node, p string) {
						if x, ok := d.addr(n, p); ok {
							c.VIPs = append(c.VIPs, x)
						}
					})
				}},
				"min": {false, func(n *yaml.Node, p string) { d.intIn(n, p, 1, math.MaxInt32, &c.Min) }},
			})
		}},
		"unbroken": {false, func(n *yaml.Node, p string) {
			c := &UnbrokenCheck{}
			a.Unbroken = c
			d.mapping(n, p, map[string]field{
				"started": {true, func(n *yaml.Node, p string) { d.str(n, p, &c.Started) }},
				"at":      {true, func(n *yaml.Node, p string) { d.ifaces(n, p, &c.At) }},
				"except": {false, func(n *yaml.Node, p string) {
					d.seqOrOne(n, p, func(n *yaml.Node, p string) {
						var s string
						d.str(n, p, &s)
						c.Except = append(c.Except, s)
					})
				}},
			})
		}},
		"admitted_rate": {false, func(n *yaml.Node, p string) {
			c := &AdmittedRateCheck{Tolerance: 0.05}
			a.AdmittedRate = c
			d.mapping(n, p, map[string]field{
				"from": {true, func(n *yaml.Node, p string) { d.str(n, p, &c.From) }},
				"rate": {true, func(n *yaml.Node, p string) {
					if v, ok := d.uint(n, p, traffic.MaxConnectRate); ok {
						if v == 0 {
							d.fail(n, p, "0: want a rate of at least 1 connection a second")
						}
						c.Rate = float64(v)
					}
				}},
				"tolerance": {false, func(n *yaml.Node, p string) { d.fraction(n, p, &c.Tolerance) }},
			})
		}},
		"connections": {false, func(n *yaml.Node, p string) {
			c := &ConnectionsCheck{}
			a.Connections = c
			count := func(dst **int) func(n *yaml.Node, p string) {
				return func(n *yaml.Node, p string) {
					var v int
					d.intIn(n, p, 0, math.MaxInt32, &v)
					*dst = &v
				}
			}
			d.mapping(n, p, map[string]field{
				"from":    {true, func(n *yaml.Node, p string) { d.str(n, p, &c.From) }},
				"ok":      {false, count(&c.OK)},
				"refused": {false, count(&c.Refused)},
				"timeout": {false, count(&c.Timeout)},
				"failed":  {false, count(&c.Failed)},
			})
			if n.Kind == yaml.MappingNode && c.OK == nil && c.Refused == nil && c.Timeout == nil && c.Failed == nil {
				d.fail(n, p, "want at least one of ok, refused, timeout, failed")
			}
		}},
		"chain_intact": {false, func(n *yaml.Node, p string) {
			c := &ChainIntactCheck{}
			a.ChainIntact = c
			d.mapping(n, p, map[string]field{
				"at":       {true, func(n *yaml.Node, p string) { c.At, _ = d.iface(n, p) }},
				"programs": {true, func(n *yaml.Node, p string) { c.Programs = d.programs(n, p) }},
			})
			if n.Kind == yaml.MappingNode && hasKey(n, "programs") && len(c.Programs) == 0 {
				d.fail(n, p+".programs", "want at least one program")
			}
		}},
		"too_big": {false, func(n *yaml.Node, p string) {
			c := &TooBigCheck{}
			a.TooBig = c
			d.mapping(n, p, map[string]field{
				"at":    {true, func(n *yaml.Node, p string) { c.At, _ = d.iface(n, p) }},
				"mtu":   {true, func(n *yaml.Node, p string) { d.intIn(n, p, 68, 65535, &c.MTU) }},
				"count": {true, func(n *yaml.Node, p string) { d.intIn(n, p, 1, math.MaxInt32, &c.Count) }},
			})
		}},
	})
	st.Expect = append(st.Expect, a)
}

// counters decodes {node: lb1, values: {tx: 600, pass: [0, 10]}}.
func (d *decoder) counters(n *yaml.Node, path string) *CountersCheck {
	c := &CountersCheck{}
	d.mapping(n, path, map[string]field{
		"node": {false, func(n *yaml.Node, p string) { d.str(n, p, &c.Node) }},
		"values": {true, func(n *yaml.Node, p string) {
			if n.Kind != yaml.MappingNode || len(n.Content) == 0 {
				d.fail(n, p, "want a mapping from counter name to a value or [min, max]")
				return
			}
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				vp := join(p, k.Value)
				d.mark(vp, k)
				cv := CounterValue{Name: k.Value}
				if v.Kind == yaml.SequenceNode {
					if len(v.Content) != 2 {
						d.fail(v, vp, "want a value or [min, max]")
						continue
					}
					lo, ok1 := d.uint(v.Content[0], vp+"[0]", math.MaxUint64)
					hi, ok2 := d.uint(v.Content[1], vp+"[1]", math.MaxUint64)
					if ok1 && ok2 && lo > hi {
						d.fail(v, vp, "[%d, %d]: want min ≤ max", lo, hi)
					}
					cv.Min, cv.Max = lo, hi
				} else {
					x, _ := d.uint(v, vp, math.MaxUint64)
					cv.Min, cv.Max = x, x
				}
				c.Values = append(c.Values, cv)
			}
		}},
	})
	return c
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
