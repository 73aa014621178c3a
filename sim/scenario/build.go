package scenario

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/vishvananda/netlink"

	"github.com/sluice-dp/sluice/dataplane/agent"
	"github.com/sluice-dp/sluice/dataplane/attach"
	"github.com/sluice-dp/sluice/dataplane/lb"
	"github.com/sluice-dp/sluice/sim/topo"
	"github.com/sluice-dp/sluice/sim/traffic"
)

// world is a scenario's built topology with what runs in it.
type world struct {
	sc    *Scenario
	topo  *topo.Topology
	nodes map[string]*topo.Node
	// ends and peers map an interface to its end of the link and to the
	// other end.
	ends, peers map[Iface]topo.Endpoint
	lbs         []*lbNode
	agents      []*agentNode
	chains      []*chainNode
	// backends are the VIPs' backends as now configured on every LB node.
	backends map[lb.VIP][]lb.Backend
	closers  []func() error
}

// lbNode is the load balancer loaded for one LB node and attached there.
type lbNode struct {
	node string
	lb   *lb.LB
	att  *attach.XDPAttachment
}

// close releases everything in reverse order of creation, then deletes
// the namespaces. It is safe to call on a partly built world.
func (w *world) close() error {
	var errs []error
	for i := len(w.closers) - 1; i >= 0; i-- {
		errs = append(errs, w.closers[i]())
	}
	w.closers = nil
	if w.topo != nil {
		if err := w.topo.Close(); err != nil {
			errs = append(errs, fmt.Errorf("delete topology %s: %w", w.topo.Prefix(), err))
		}
	}
	return errors.Join(errs...)
}

// build creates the scenario's nodes, links, routes, services, LB
// programs and chains. On error the caller still closes w.
func (w *world) build(mode attach.Mode) error {
	sc := w.sc
	for _, n := range sc.Nodes {
		node, err := w.topo.AddNode(n.Name)
		if err != nil {
			return err
		}
		w.nodes[n.Name] = node
	}
	for _, l := range sc.Links {
		a := topo.LinkEnd{Node: w.nodes[l.A.Node], Iface: l.A.Iface, MAC: l.A.MAC, Addrs: l.A.Addrs, Queues: l.A.Queues, MTU: l.A.MTU}
		b := topo.LinkEnd{Node: w.nodes[l.B.Node], Iface: l.B.Iface, MAC: l.B.MAC, Addrs: l.B.Addrs, Queues: l.B.Queues, MTU: l.B.MTU}
		link, err := w.topo.AddLink(a, b)
		if err != nil {
			return err
		}
		// Pinned neighbours: no ARP or NDP on any link, so counters and
		// captures hold only the scenario's traffic.
		if err := link.PinNeighbors(); err != nil {
			return err
		}
		ia, ib := Iface{l.A.Node, link.A.Iface}, Iface{l.B.Node, link.B.Iface}
		w.ends[ia], w.peers[ia] = link.A, link.B
		w.ends[ib], w.peers[ib] = link.B, link.A
	}
	for _, n := range sc.Nodes {
		if err := w.setupRole(n); err != nil {
			return err
		}
		for _, kv := range n.Sysctls {
			if err := w.nodes[n.Name].SetSysctl(kv[0], kv[1]); err != nil {
				return err
			}
		}
	}
	for _, r := range sc.Routes {
		rt := topo.Route{Dst: r.Dst}
		if len(r.Via) == 1 {
			rt.Via = r.Via[0]
		} else {
			rt.Multipath = r.Via
		}
		if err := w.nodes[r.Node].AddRoute(rt); err != nil {
			return err
		}
	}
	// Agents first: a local-mode VIP must be on the VM's lo before a
	// service binds it.
	for _, a := range sc.Agents {
		if err := w.startAgent(a); err != nil {
			return err
		}
	}
	for _, s := range sc.Services {
		if err := w.startService(s); err != nil {
			return err
		}
	}
	if sc.LB != nil {
		if err := w.startLB(mode); err != nil {
			return err
		}
	}
	for _, c := range sc.Chains {
		if err := w.startChain(c, mode); err != nil {
			return err
		}
	}
	if testHooks.built != nil {
		return testHooks.built()
	}
	return nil
}

// setupRole gives a node what its role needs.
func (w *world) setupRole(n Node) error {
	node := w.nodes[n.Name]
	switch n.Role {
	case RoleRouter:
		return node.EnableForwarding()
	case RoleClient, RoleVM:
		// A client's packets must carry complete checksums, as a real
		// NIC's do: the LB derives the outer GUE checksum from the inner
		// one, and veth's transmit offload would leave it partial. A
		// VM's replies do not cross the LB, but with complete checksums
		// a capture can verify the agent's rewrite of them.
		for i, e := range w.ends {
			if i.Node == n.Name {
				if err := node.SetTxChecksum(e.Iface, false); err != nil {
					return err
				}
			}
		}
	case RoleBackend:
		// A host in front of a VM forwards between its uplink and the
		// VM, with rp_filter off: the VM's replies come from a VIP that
		// is routed elsewhere. Tunnels to the VM are forwarded, not
		// delivered to the host, so the sink never sees them.
		if slices.ContainsFunc(w.sc.Agents, func(a AgentSpec) bool { return a.Attach.Node == n.Name }) {
			if err := node.EnableForwarding(); err != nil {
				return err
			}
		}
		return w.sink(n.Name)
	}
	return nil
}

// agentNode is the backend agent of one backend host.
type agentNode struct {
	spec  AgentSpec
	agent *agent.Agent
	att   *attach.TCAttachment
}

func (n *agentNode) close() error {
	var errs []error
	if n.att != nil {
		errs = append(errs, n.att.Close())
	}
	errs = append(errs, n.agent.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("release agent of %s: %w", n.spec.Attach, err)
	}
	return nil
}

// startAgent loads the agent of a backend host, configures it, puts the
// local-mode VIPs on the VM's lo and attaches the agent to the host's
// interface toward the VM (tcx where the kernel has it).
func (w *world) startAgent(s AgentSpec) error {
	peer := w.peers[s.Attach]
	if len(s.Backends) == 0 {
		for _, p := range peer.Addrs {
			s.Backends = append(s.Backends, p.Addr())
		}
	}
	a, err := agent.Load(agent.Options{}, agent.Config{GUEPort: guePort(w.sc.LB)})
	if err != nil {
		return fmt.Errorf("load agent for %s: %w", s.Attach, err)
	}
	n := &agentNode{spec: s, agent: a}
	w.closers = append(w.closers, n.close)
	w.agents = append(w.agents, n)
	for _, b := range s.Backends {
		if err := a.AddBackendAddr(b); err != nil {
			return fmt.Errorf("agent on %s: backend %v: %w", s.Attach, b, err)
		}
	}
	vm := peer.Node
	for _, v := range s.VIPs {
		av := agent.VIP{Addr: v.VIP.Addr, Port: v.VIP.Port, Proto: v.VIP.Proto}
		if err := a.AddVIP(av, v.Mode, v.App); err != nil {
			return fmt.Errorf("agent on %s: vip %v: %w", s.Attach, v.VIP, err)
		}
		if v.Mode == agent.Local {
			if err := addLoopback(vm, v.VIP.Addr); err != nil {
				return err
			}
		}
	}
	err = w.nodes[s.Attach.Node].Do(func() error {
		var err error
		n.att, err = a.Attach(s.Attach.Name, agent.AttachOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("agent on %s: %w", s.Attach, err)
	}
	return nil
}

// addLoopback puts addr on a node's lo (once), as a VM that owns a VIP
// has it.
func addLoopback(node *topo.Node, addr netip.Addr) error {
	h := node.Netlink()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("vip on lo of %s: %w", node.Name(), err)
	}
	if addr.Is6() {
		if err := node.SetSysctl("net/ipv6/conf/lo/disable_ipv6", "0"); err != nil {
			return err
		}
	}
	bits := addr.BitLen()
	nl := &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(bits, bits)}}
	if err := h.AddrAdd(lo, nl); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("vip %v on lo of %s: %w", addr, node.Name(), err)
	}
	return nil
}

// sink opens, in a backend, the sockets that accept tunnelled packets: a
// UDP socket on the GUE port, so that the backend's kernel verifies every
// outer checksum and answers no "port unreachable", and raw sockets for
// IPIP and IP6IP6, so that it answers no "protocol unreachable". Those
// answers would otherwise reach the LB nodes and show in their counters.
func (w *world) sink(name string) error {
	port := int(guePort(w.sc.LB))
	var fds []int
	var udp *net.UDPConn
	err := w.nodes[name].Do(func() error {
		var err error
		udp, err = net.ListenUDP("udp", &net.UDPAddr{Port: port})
		if err != nil {
			return err
		}
		for _, s := range [][2]int{{unix.AF_INET, unix.IPPROTO_IPIP}, {unix.AF_INET, unix.IPPROTO_IPV6},
			{unix.AF_INET6, unix.IPPROTO_IPIP}, {unix.AF_INET6, unix.IPPROTO_IPV6}} {
			fd, err := unix.Socket(s[0], unix.SOCK_RAW|unix.SOCK_CLOEXEC, s[1])
			if err != nil {
				return err
			}
			fds = append(fds, fd)
		}
		return nil
	})
	w.closers = append(w.closers, func() error {
		var errs []error
		if udp != nil {
			errs = append(errs, udp.Close())
		}
		for _, fd := range fds {
			errs = append(errs, unix.Close(fd))
		}
		return errors.Join(errs...)
	})
	if err != nil {
		return fmt.Errorf("open tunnel sinks in %s: %w", name, err)
	}
	// The socket is never read: its buffer fills and the kernel drops
	// the rest after counting it, which is all a sink is for.
	return nil
}

func (w *world) startService(s Service) error {
	if s.UDP.IsValid() {
		stop, err := traffic.ServeUDPEcho(w.nodes[s.Node], s.UDP)
		if err != nil {
			return fmt.Errorf("serve udp echo on %v in %s: %w", s.UDP, s.Node, err)
		}
		w.closers = append(w.closers, stop)
		return nil
	}
	stop, err := traffic.ServeHTTP(w.nodes[s.Node], s.HTTP)
	if err != nil {
		return fmt.Errorf("serve http on %v in %s: %w", s.HTTP, s.Node, err)
	}
	w.closers = append(w.closers, stop)
	return nil
}

// startLB loads the program once per LB node, configures it identically
// everywhere and attaches it.
func (w *world) startLB(mode attach.Mode) error {
	s := w.sc.LB
	for _, v := range s.VIPs {
		w.backends[v.VIP] = append([]lb.Backend(nil), v.Backends...)
	}
	for _, at := range s.Attach {
		end, peer := w.ends[at], w.peers[at]
		cfg := lb.Config{
			Seed: s.Seed, TunnelMTU: s.TunnelMTU, GUEPort: s.GUEPort,
			SourceV4: end.Addr4(), SourceV6: end.Addr6(),
			// Every encapsulated packet goes back out to the node at
			// the other end of the link, the LB node's gateway.
			GatewayMAC: peer.MAC,
		}
		l, err := lb.Load(lb.Options{RingSize: s.RingSize}, cfg)
		if err != nil {
			return fmt.Errorf("load lb for %s: %w", at, err)
		}
		n := &lbNode{node: at.Node, lb: l}
		w.closers = append(w.closers, n.close)
		w.lbs = append(w.lbs, n)
		for _, v := range s.VIPs {
			if err := l.AddVIP(v.VIP, v.Options); err != nil {
				return fmt.Errorf("lb on %s: add vip %v: %w", at.Node, v.VIP, err)
			}
			if err := l.SetBackends(v.VIP, v.Backends); err != nil {
				return fmt.Errorf("lb on %s: set backends of %v: %w", at.Node, v.VIP, err)
			}
		}
		if w.chained(at) {
			// The chain on the interface runs the LB, attached by
			// startChain.
			continue
		}
		if mode == attach.Native {
			// Native XDP_TX into a veth is delivered only if the
			// receiving end runs an XDP program too; generic mode
			// transmits ordinary socket buffers.
			if err := peer.Node.AttachXDPPass(peer.Iface); err != nil {
				return err
			}
		}
		err = w.nodes[at.Node].Do(func() error {
			var err error
			n.att, err = l.Attach(at.Name, mode)
			return err
		})
		if err != nil {
			return fmt.Errorf("lb on %s: %w", at.Node, err)
		}
	}
	return nil
}

func (n *lbNode) close() error {
	var errs []error
	if n.att != nil {
		errs = append(errs, n.att.Close())
	}
	errs = append(errs, n.lb.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("release lb of %s: %w", n.node, err)
	}
	return nil
}

// guePort is the GUE port of the scenario's LB (6080 by default, and
// when there is no LB).
func guePort(s *LBSpec) uint16 {
	if s == nil || s.GUEPort == 0 {
		return 6080
	}
	return s.GUEPort
}

// lbSources maps each LB node's own addresses, the outer sources of its
// GUE packets, to the node.
func (w *world) lbSources() map[netip.Addr]string {
	m := map[netip.Addr]string{}
	if w.sc.LB == nil {
		return m
	}
	for _, at := range w.sc.LB.Attach {
		for _, p := range w.ends[at].Addrs {
			m[p.Addr()] = at.Node
		}
	}
	return m
}

// nodeAddrs returns every address of a node's interfaces.
func (w *world) nodeAddrs(node string) map[netip.Addr]bool {
	m := map[netip.Addr]bool{}
	for i, e := range w.ends {
		if i.Node == node {
			for _, p := range e.Addrs {
				m[p.Addr()] = true
			}
		}
	}
	return m
}
