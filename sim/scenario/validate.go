package scenario

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"

	"github.com/sluice-dp/sluice/ctl/maglev"
	"github.com/sluice-dp/sluice/dataplane/lb"
)

// nodeNameRE is sim/topo's rule for node names.
var nodeNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// sysctlRE accepts net.* sysctls, the ones that belong to a namespace.
var sysctlRE = regexp.MustCompile(`^net\.[a-z0-9_.-]+$`)

// maxIfname is IFNAMSIZ less the terminating zero.
const maxIfname = 15

// validate checks what the walk could not: that every reference names a
// node, interface, VIP or step that exists, and that addresses fit
// together. It runs before anything is built.
func validate(d *decoder, sc *Scenario) {
	roles := map[string]Role{}
	for _, n := range sc.Nodes {
		if _, dup := roles[n.Name]; dup {
			d.failAt(d.line("nodes."+n.Name), "nodes."+n.Name, "node defined twice")
		}
		roles[n.Name] = n.Role
	}
	nodeRef := func(path, name string) bool {
		if _, ok := roles[name]; !ok {
			d.failAt(d.line(path), path, "no node named %q (nodes: %v)", name, nodeNames(sc))
			return false
		}
		return true
	}

	// Interfaces, with their addresses, as the links create them.
	ifaces := map[Iface][]netip.Prefix{}
	for i := range sc.Links {
		l := &sc.Links[i]
		for j, e := range []*LinkEnd{&l.A, &l.B} {
			peer := []*LinkEnd{&l.B, &l.A}[j]
			p := fmt.Sprintf("links[%d].%s", i, []string{"a", "b"}[j])
			if !nodeRef(p+".node", e.Node) {
				continue
			}
			if e.Iface == "" {
				e.Iface = peer.Node
			}
			if len(e.Iface) > maxIfname {
				d.failAt(d.line(p+".node"), p+".iface", "%q: want an interface name of at most %d bytes", e.Iface, maxIfname)
			}
			key := Iface{e.Node, e.Iface}
			if _, dup := ifaces[key]; dup {
				d.failAt(d.line(p+".node"), p+".iface", "%s exists already: name the interface with iface:", key)
			}
			ifaces[key] = e.Addrs
		}
	}
	ifaceRef := func(path string, i Iface) bool {
		if !nodeRef(path, i.Node) {
			return false
		}
		if _, ok := ifaces[i]; !ok {
			var have []string
			for k := range ifaces {
				if k.Node == i.Node {
					have = append(have, k.Name)
				}
			}
			slices.Sort(have)
			d.failAt(d.line(path), path, "node %s has no interface %q (it has %v)", i.Node, i.Name, have)
			return false
		}
		return true
	}

	for i, r := range sc.Routes {
		p := fmt.Sprintf("routes[%d]", i)
		if !nodeRef(p+".node", r.Node) || !r.Dst.IsValid() {
			continue
		}
		for _, via := range r.Via {
			if via.Is4() != r.Dst.Addr().Is4() {
				d.failAt(d.line(p+".via"), p+".via", "%v: want a gateway of dst %v's family", via, r.Dst)
				continue
			}
			if !onLink(ifaces, r.Node, via) {
				d.failAt(d.line(p+".via"), p+".via", "%v is in no subnet of node %s's interfaces: want a neighbour's address", via, r.Node)
			}
		}
	}

	if sc.LB != nil {
		validateLB(d, sc, roles, ifaceRef)
	} else {
		for _, n := range sc.Nodes {
			if n.Role == RoleLB {
				d.failAt(d.line("nodes."+n.Name), "nodes."+n.Name+".role", "an lb node needs the scenario's lb: section")
			}
		}
	}
	for i, a := range sc.Agents {
		p := fmt.Sprintf("agents[%d]", i)
		if !ifaceRef(p+".attach", a.Attach) {
			continue
		}
		if roles[a.Attach.Node] != RoleBackend {
			d.failAt(d.line(p+".attach"), p+".attach", "node %s has role %s, want backend (the host in front of a vm node)", a.Attach.Node, roles[a.Attach.Node])
		}
		if peer, ok := peerOf(sc, a.Attach); ok && roles[peer] != RoleVM {
			d.failAt(d.line(p+".attach"), p+".attach", "%s leads to node %s, role %s: want a vm node", a.Attach, peer, roles[peer])
		}
		for j, v := range a.VIPs {
			if sc.LB == nil || !slices.ContainsFunc(sc.LB.VIPs, func(x VIPSpec) bool { return x.VIP == v.VIP }) {
				vp := fmt.Sprintf("%s.vips[%d].vip", p, j)
				d.failAt(d.line(vp), vp, "%v is not a VIP of the lb: section", v.VIP)
			}
		}
	}
	for i, s := range sc.Services {
		p := fmt.Sprintf("services[%d]", i)
		if nodeRef(p+".node", s.Node) && s.UDP.IsValid() && roles[s.Node] == RoleBackend && s.UDP.Port() == guePort(sc.LB) {
			d.failAt(d.line(p+".udp"), p+".udp", "port %d is the GUE port a backend receives tunnelled packets on: want another", s.UDP.Port())
		}
	}
	chains := validateChains(d, sc, ifaceRef)
	validateSteps(d, sc, nodeRef, ifaceRef, chains)
}

func validateLB(d *decoder, sc *Scenario, roles map[string]Role, ifaceRef func(string, Iface) bool) {
	s := sc.LB
	if s.RingSize != 0 && !isRingSize(s.RingSize) {
		d.failAt(d.line("lb.ring_size"), "lb.ring_size", "%d: want one of %v", s.RingSize, ringSizes())
	}
	seen := map[string]bool{}
	for i, a := range s.Attach {
		p := "lb.attach"
		if len(s.Attach) > 1 {
			p = fmt.Sprintf("lb.attach[%d]", i)
		}
		if !ifaceRef(p, a) {
			continue
		}
		if roles[a.Node] != RoleLB {
			d.failAt(d.line(p), p, "node %s has role %s, want lb", a.Node, roles[a.Node])
		}
		if seen[a.Node] {
			d.failAt(d.line(p), p, "node %s attached twice: one LB program per node", a.Node)
		}
		seen[a.Node] = true
	}
	vips := map[lb.VIP]bool{}
	for i, v := range s.VIPs {
		p := fmt.Sprintf("lb.vips[%d]", i)
		if vips[v.VIP] {
			d.failAt(d.line(p+".vip"), p+".vip", "%v defined twice", v.VIP)
		}
		vips[v.VIP] = true
		checkBackends(d, p+".backends", v.VIP, v.Backends)
	}
}

// checkBackends rejects what lb.SetBackends would, with a line number.
func checkBackends(d *decoder, path string, v lb.VIP, bs []lb.Backend) {
	seen := map[netip.Addr]bool{}
	for _, b := range bs {
		if v.Addr.Is6() && b.Addr.Is4() {
			d.failAt(d.line(path), path, "backend %v: an IPv6 VIP needs IPv6 backends", b.Addr)
		}
		if seen[b.Addr] {
			d.failAt(d.line(path), path, "backend %v listed twice", b.Addr)
		}
		seen[b.Addr] = true
	}
}

func validateSteps(d *decoder, sc *Scenario, nodeRef func(string, string) bool, ifaceRef func(string, Iface) bool, chains *chainState) {
	vips := map[lb.VIP]bool{}
	lbNodes := map[string]bool{}
	if sc.LB != nil {
		for _, v := range sc.LB.VIPs {
			vips[v.VIP] = true
		}
		for _, a := range sc.LB.Attach {
			lbNodes[a.Node] = true
		}
	}
	vipRef := func(path string, v lb.VIP) {
		if !vips[v] {
			d.failAt(d.line(path), path, "%v is not a VIP of the lb: section", v)
		}
	}
	needLB := func(path string) bool {
		if sc.LB == nil {
			d.failAt(d.line(path), path, "needs the scenario's lb: section")
			return false
		}
		return true
	}
	earlier := map[string]bool{}
	// holds are the names of the hold: loads of the steps so far.
	holds := map[string]bool{}
	for i, st := range sc.Steps {
		p := fmt.Sprintf("steps[%d]", i)
		if earlier[st.Name] {
			d.failAt(d.line(p+".name"), p+".name", "%q: another step has this name", st.Name)
		}
		for j, e := range st.Events {
			ep := fmt.Sprintf("%s.events[%d]", p, j)
			switch {
			case e.SetBackends != nil:
				if needLB(ep + ".set_backends") {
					vipRef(ep+".set_backends.vip", e.SetBackends.VIP)
					checkBackends(d, ep+".set_backends.backends", e.SetBackends.VIP, e.SetBackends.Backends)
				}
			case e.Link != nil:
				ifaceRef(ep+".link.iface", e.Link.Iface)
			case e.Node != nil:
				nodeRef(ep+".node.name", e.Node.Node)
			case e.Chain != nil:
				chains.event(ep+".chain", *e.Chain)
			case e.Close != nil:
				if !holds[e.Close.Hold] {
					d.failAt(d.line(ep+".close.hold"), ep+".close.hold", "%q: want the name of a hold: of an earlier step", e.Close.Hold)
				}
			}
		}
		for j, h := range st.Hold {
			hp := fmt.Sprintf("%s.hold[%d]", p, j)
			nodeRef(hp+".from", h.From)
			if holds[h.Name] {
				d.failAt(d.line(hp+".name"), hp+".name", "%q: another hold has this name", h.Name)
			}
		}
		// Added after the events: a close event names a hold of an
		// earlier step.
		for _, h := range st.Hold {
			holds[h.Name] = true
		}
		for j, c := range st.Connect {
			nodeRef(fmt.Sprintf("%s.connect[%d].from", p, j), c.From)
		}
		for j, s := range st.Send {
			ifaceRef(fmt.Sprintf("%s.send[%d].at", p, j), s.At)
		}
		for j, h := range st.HTTP {
			nodeRef(fmt.Sprintf("%s.http[%d].from", p, j), h.From)
			if h.Until != "" && !slices.ContainsFunc(sc.Steps[i+1:], func(x Step) bool { return x.Name == h.Until }) {
				up := fmt.Sprintf("%s.http[%d].until", p, j)
				d.failAt(d.line(up), up, "%q: want the name of a later step", h.Until)
			}
		}
		for j, u := range st.UDP {
			nodeRef(fmt.Sprintf("%s.udp[%d].from", p, j), u.From)
		}
		for j, c := range st.Capture {
			cp := p + ".capture"
			if len(st.Capture) > 1 {
				cp = fmt.Sprintf("%s.capture[%d]", p, j)
			}
			ifaceRef(cp, c)
		}
		for j, a := range st.Expect {
			ap := fmt.Sprintf("%s.expect[%d]", p, j)
			switch {
			case a.Encapsulation != nil:
				for k, at := range a.Encapsulation.At {
					atp := ap + ".encapsulation.at"
					if len(a.Encapsulation.At) > 1 {
						atp = fmt.Sprintf("%s[%d]", atp, k)
					}
					if ifaceRef(atp, at) && !slices.Contains(st.Capture, at) {
						d.failAt(d.line(atp), atp, "%s is not among the step's capture: points", at)
					}
				}
				needLB(ap + ".encapsulation")
			case a.Distribution != nil:
				if needLB(ap + ".distribution") {
					vipRef(ap+".distribution.vip", a.Distribution.VIP)
				}
			case a.Consistency != nil:
				needLB(ap + ".consistency")
				for k, w := range a.Consistency.With {
					if !earlier[w] {
						wp := fmt.Sprintf("%s.consistency.with[%d]", ap, k)
						d.failAt(d.line(ap+".consistency.with"), wp, "%q: want the name of an earlier step", w)
					}
				}
			case a.Disruption != nil:
				needLB(ap + ".disruption")
				if !earlier[a.Disruption.Before] {
					d.failAt(d.line(ap+".disruption.before"), ap+".disruption.before", "%q: want the name of an earlier step", a.Disruption.Before)
				}
			case a.Counters != nil:
				chains.counters(ap+".counters", a.Counters, lbNodes, needLB)
			case a.AdmittedRate != nil:
				validateAdmittedRate(d, ap+".admitted_rate", st, a.AdmittedRate, nodeRef)
			case a.Connections != nil:
				cp := ap + ".connections.from"
				if nodeRef(cp, a.Connections.From) && !slices.ContainsFunc(st.Connect, func(c ConnectLoad) bool { return c.From == a.Connections.From }) &&
					!slices.ContainsFunc(st.Hold, func(h HoldSpec) bool { return h.From == a.Connections.From }) {
					d.failAt(d.line(cp), cp, "the step has no connect: or hold: from %s", a.Connections.From)
				}
			case a.ChainIntact != nil:
				chains.intact(ap+".chain_intact", a.ChainIntact)
			case a.Delivery != nil:
				if len(st.HTTP) == 0 && len(st.UDP) == 0 && !collects(sc, st.Name) {
					d.failAt(a.Line, ap+".delivery", "the step sends no http: or udp: requests")
				}
			case a.NoReplies != nil:
				for k, at := range a.NoReplies.At {
					atp := fmt.Sprintf("%s.no_replies.at[%d]", ap, k)
					if ifaceRef(atp, at) && !slices.Contains(st.Capture, at) {
						d.failAt(d.line(ap+".no_replies.at"), atp, "%s is not among the step's capture: points", at)
					}
				}
				needLB(ap + ".no_replies")
			case a.RepliesFrom != nil:
				tp := ap + ".replies_from_vip.at"
				if ifaceRef(tp, a.RepliesFrom.At) && !slices.Contains(st.Capture, a.RepliesFrom.At) {
					d.failAt(d.line(tp), tp, "%s is not among the step's capture: points", a.RepliesFrom.At)
				}
				if needLB(ap+".replies_from_vip") && len(a.RepliesFrom.VIPs) == 0 && len(st.HTTP) == 0 {
					d.failAt(a.Line, ap+".replies_from_vip.vips", "the step has no http: loads to take VIPs from: list vips:")
				}
			case a.Unbroken != nil:
				up := ap + ".unbroken"
				if !earlier[a.Unbroken.Started] {
					d.failAt(d.line(up+".started"), up+".started", "%q: want the name of an earlier step", a.Unbroken.Started)
					break
				}
				started := sc.Steps[slices.IndexFunc(sc.Steps, func(x Step) bool { return x.Name == a.Unbroken.Started })]
				if !slices.ContainsFunc(started.HTTP, func(h HTTPLoad) bool { return h.Until == st.Name }) {
					d.failAt(d.line(up+".started"), up+".started", "step %q starts no http: load with until: %q", started.Name, st.Name)
				}
				for k, at := range a.Unbroken.At {
					atp := fmt.Sprintf("%s.at[%d]", up, k)
					if ifaceRef(atp, at) && !slices.Contains(started.Capture, at) {
						d.failAt(d.line(up+".at"), atp, "%s is not among the capture: points of step %q", at, started.Name)
					}
				}
			case a.TooBig != nil:
				tp := ap + ".too_big.at"
				if ifaceRef(tp, a.TooBig.At) && !slices.Contains(st.Capture, a.TooBig.At) {
					d.failAt(d.line(tp), tp, "%s is not among the step's capture: points", a.TooBig.At)
				}
			}
		}
		earlier[st.Name] = true
	}
}

// collects reports whether an earlier step runs an http: load until step
// name.
func collects(sc *Scenario, name string) bool {
	for _, st := range sc.Steps {
		if slices.ContainsFunc(st.HTTP, func(h HTTPLoad) bool { return h.Until == name }) {
			return true
		}
	}
	return false
}

// peerOf names the node at the other end of an interface's link.
func peerOf(sc *Scenario, i Iface) (string, bool) {
	for _, l := range sc.Links {
		if l.A.Node == i.Node && l.A.Iface == i.Name {
			return l.B.Node, true
		}
		if l.B.Node == i.Node && l.B.Iface == i.Name {
			return l.A.Node, true
		}
	}
	return "", false
}

// onLink reports whether a is inside the subnet of one of node's
// interfaces.
func onLink(ifaces map[Iface][]netip.Prefix, node string, a netip.Addr) bool {
	for k, ps := range ifaces {
		if k.Node != node {
			continue
		}
		for _, p := range ps {
			if p.Masked().Contains(a) {
				return true
			}
		}
	}
	return false
}

func nodeNames(sc *Scenario) []string {
	var names []string
	for _, n := range sc.Nodes {
		names = append(names, n.Name)
	}
	return names
}

func isRingSize(n uint32) bool { return slices.Contains(maglev.Sizes, n) }

func ringSizes() []uint32 { return maglev.Sizes }
