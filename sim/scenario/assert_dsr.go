package scenario

import (
	"fmt"
	"maps"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	"github.com/gopacket/gopacket/layers"

	"github.com/sluice-dp/sluice/internal/pkttest"
)

// This file holds the assertions about direct server return: where
// replies go (never through an LB node) and what they look like when they
// reach the client, and whether long connections survived a change.

// vmBackends maps each backend host to the addresses its agent
// decapsulates for, the addresses of the VM behind it.
func (w *world) vmBackends() map[string]map[netip.Addr]bool {
	m := map[string]map[netip.Addr]bool{}
	for _, a := range w.agents {
		if m[a.spec.Attach.Node] == nil {
			m[a.spec.Attach.Node] = map[netip.Addr]bool{}
		}
		for _, b := range a.spec.Backends {
			m[a.spec.Attach.Node][b] = true
		}
	}
	return m
}

// vipAddrs returns the addresses of the lb: section's VIPs.
func (r *runner) vipAddrs() map[netip.Addr]bool {
	m := map[netip.Addr]bool{}
	for _, v := range r.w.sc.LB.VIPs {
		m[v.VIP.Addr] = true
	}
	return m
}

// clientAddrs returns every address of the client nodes.
func (r *runner) clientAddrs() map[netip.Addr]bool {
	m := map[netip.Addr]bool{}
	for _, n := range r.w.sc.Nodes {
		if n.Role == RoleClient {
			maps.Copy(m, r.w.nodeAddrs(n.Name))
		}
	}
	return m
}

// noReplies checks that the points saw requests to VIPs only: every frame
// (in either direction, IPv6 link chatter aside) is a packet to a VIP or a
// tunnel carrying one, and none, outside or inside a tunnel, comes from a
// VIP or goes to a client node's address.
func (r *runner) noReplies(c *NoRepliesCheck, data *stepData, res *AssertionResult) {
	res.Name = fmt.Sprintf("%s saw only requests to VIPs, never a reply", ifaceList(c.At))
	vips, clients := r.vipAddrs(), r.clientAddrs()
	port := guePort(r.w.sc.LB)
	var p problems
	requests, replies := 0, 0
	for _, at := range c.At {
		for _, f := range data.captures[at] {
			a := decodeArrival(at, f, port)
			if linkChatter(a) {
				continue
			}
			outer, ok := decodeFlow(a.pkt)
			if !ok {
				p.add("frames without IP", "%s: %d bytes", at, len(f.Data))
				continue
			}
			reply := func(fk flowKey) bool { return vips[fk.Src.Addr()] || clients[fk.Dst.Addr()] }
			switch {
			case reply(outer) || (a.inner != nil && reply(a.flow)):
				replies++
				if a.inner != nil {
					p.add("replies", "%s: %v in a tunnel %v", at, a.flow, outer)
				} else {
					p.add("replies", "%s: %v", at, outer)
				}
			case a.inner == nil && vips[outer.Dst.Addr()], a.inner != nil && vips[a.flow.Dst.Addr()]:
				requests++
			default:
				p.add("packets neither to nor from a VIP", "%s: %v", at, outer)
			}
		}
	}
	if requests == 0 {
		p.add("no request seen", "%s", ifaceList(c.At))
	}
	res.Passed = p.none()
	res.Observed = fmt.Sprintf("%d packets to VIPs (plain or tunnelled), %d replies", requests, replies)
	if !p.none() {
		res.Observed += "; " + p.String()
	}
}

// repliesFromVIP checks what reaches the client side: packets from each
// VIP, none from a backend's or an application's own address (a reply
// the agent failed to rewrite, or one that left the VM untranslated), and
// every checksum right after the agent's rewrite and the routers.
func (r *runner) repliesFromVIP(c *RepliesFromVIPCheck, data *stepData, res *AssertionResult) {
	want := c.VIPs
	if len(want) == 0 {
		for _, h := range data.http {
			if u, err := url.Parse(h.spec.URL); err == nil {
				if a, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil && !slices.Contains(want, a) {
					want = append(want, a)
				}
			}
		}
	}
	res.Name = fmt.Sprintf("at least %d packets from each of %v at %s, none from a backend's own address", c.Min, want, c.At)
	own := map[netip.Addr]bool{}
	for _, v := range r.w.sc.LB.VIPs {
		for _, b := range v.Backends {
			own[b.Addr] = true
		}
	}
	for _, a := range r.w.agents {
		for _, b := range a.spec.Backends {
			own[b] = true
		}
		for _, v := range a.spec.VIPs {
			if v.App.IsValid() {
				own[v.App.Addr()] = true
			}
		}
	}
	from := map[netip.Addr]int{}
	var p problems
	for _, f := range data.captures[c.At] {
		if f.Outgoing {
			continue
		}
		pkt := pkttest.Decode(f.Data)
		fk, ok := decodeFlow(pkt)
		if !ok {
			continue
		}
		switch {
		case slices.Contains(want, fk.Src.Addr()):
			from[fk.Src.Addr()]++
			if pkt.Layer(layers.LayerTypeTCP) == nil && pkt.Layer(layers.LayerTypeUDP) == nil {
				continue
			}
			if errs := pkttest.Checksums(pkt); len(errs) > 0 {
				p.add("bad checksums", "%v: %v", fk, errs[0])
			}
		case own[fk.Src.Addr()]:
			p.add("packets from a backend's own address", "%v", fk)
		}
	}
	var parts []string
	for _, v := range want {
		parts = append(parts, fmt.Sprintf("%d from %v", from[v], v))
		if from[v] < c.Min {
			p.add("too few from a VIP", "%v: %d", v, from[v])
		}
	}
	res.Passed = p.none() && len(want) > 0
	res.Observed = strings.Join(parts, ", ")
	if !p.none() {
		res.Observed += "; " + p.String()
	}
}

// unbroken checks the background loads started in step c.Started: each
// connection is placed on the node whose capture point saw its SYN during
// that step, and every node not excepted must have answered exactly as
// many requests as connections reached it, that is every one of them
// completely. Each connection of such a load carries one request (see
// docs/scenarios.md), so a broken connection is a missing answer.
func (r *runner) unbroken(c *UnbrokenCheck, data *stepData, res *AssertionResult) {
	res.Name = fmt.Sprintf("connections started in %q reaching %s completed", c.Started, ifaceList(c.At))
	if len(c.Except) > 0 {
		res.Name += fmt.Sprintf(" (%s excepted)", strings.Join(c.Except, ", "))
	}
	started := r.steps[c.Started]
	conns := map[string]map[netip.AddrPort]bool{}
	var p problems
	for _, at := range c.At {
		conns[at.Node] = map[netip.AddrPort]bool{}
		for _, f := range started.captures[at] {
			if f.Outgoing {
				continue
			}
			pkt := pkttest.Decode(f.Data)
			t, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if !ok || !t.SYN || t.ACK {
				continue
			}
			if fk, ok := decodeFlow(pkt); ok {
				conns[at.Node][fk.Src] = true
			}
		}
	}
	served := map[string]int{}
	total, failed, requests := 0, 0, 0
	for _, h := range data.http {
		if h.started != c.Started {
			continue
		}
		for n, k := range h.res.ServedBy {
			served[n] += k
		}
		total += h.res.Dials
		failed += h.res.Failed
		requests += h.res.OK + h.res.Failed
		if h.spec.Requests != h.spec.Connections {
			p.add("loads with more requests than connections", "%s: %d requests on %d connections", h.spec.URL, h.spec.Requests, h.spec.Connections)
		}
	}
	seen, kept := 0, 0
	var parts []string
	for _, n := range slices.Sorted(maps.Keys(conns)) {
		k := len(conns[n])
		seen += k
		note := ""
		if slices.Contains(c.Except, n) {
			note = " (excepted)"
		} else {
			kept += k
			if served[n] != k {
				p.add("connections broken", "%s: %d of %d completed", n, served[n], k)
			}
		}
		parts = append(parts, fmt.Sprintf("%s %d/%d%s", n, served[n], k, note))
	}
	if seen != total {
		p.add("connections not placed", "%d SYNs seen for %d connections opened", seen, total)
	}
	if kept == 0 {
		p.add("no connection to check", "none reached a node that is not excepted")
	}
	res.Passed = p.none()
	res.Observed = fmt.Sprintf("completed/connections: %s; %d of %d requests failed", strings.Join(parts, ", "), failed, requests)
	if !p.none() {
		res.Observed += "; " + p.String()
	}
}
