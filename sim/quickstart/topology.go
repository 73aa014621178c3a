package quickstart

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/sluice-dp/sluice/sim/topo"
)

// The address plan. Everything lives inside the run's namespaces: the
// 10.100.0.0/16 subnets exist only on their veths, and the VIP comes from
// TEST-NET-1 (RFC 5737), which no real network routes.
var (
	vipAddr = netip.MustParseAddr("192.0.2.10")

	clientNet = netip.MustParsePrefix("10.100.1.0/24") // client .2, router .1
	lbNet     = netip.MustParsePrefix("10.100.2.0/24") // lb .2, router .1
	// Backend i (1-based) sits on 10.100.(10+i).0/24, router .1, backend .2.
	backendWeights = []uint32{1, 1, 2}
)

// host returns address .n of a /24.
func host(p netip.Prefix, n byte) netip.Addr {
	a := p.Addr().As4()
	a[3] = n
	return netip.AddrFrom4(a)
}

func backendNet(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100, byte(10 + i), 0}), 24)
}

// mac derives an interface's MAC from its IPv4 address (02:00 and the four
// address bytes), so that a capture reads without a lookup table.
func mac(a netip.Addr) net.HardwareAddr {
	b := a.As4()
	return net.HardwareAddr{0x02, 0x00, b[0], b[1], b[2], b[3]}
}

// end is one end of a link in the plan: a node and its address there.
func end(n *topo.Node, p netip.Prefix, hostPart byte) topo.LinkEnd {
	a := host(p, hostPart)
	return topo.LinkEnd{Node: n, MAC: mac(a), Addrs: []netip.Prefix{netip.PrefixFrom(a, p.Bits())}}
}

// network is the built topology with the parts the run needs.
type network struct {
	topo     *topo.Topology
	client   *topo.Node
	router   *topo.Node
	lb       *topo.Node
	backends []*topo.Node
	links    []*topo.Link
	// lbLink is router<->lb: A is the router's end, B the LB's.
	lbLink *topo.Link
	// clientLink is client<->router: A is the client's end.
	clientLink *topo.Link
}

// build creates the nodes, links, routes and neighbours of the demo inside
// t. Every neighbour entry is pinned, so no ARP crosses any link and the
// LB's counters show only the demo's traffic.
func build(t *topo.Topology) (*network, error) {
	n := &network{topo: t}
	var err error
	add := func(name string) *topo.Node {
		if err != nil {
			return nil
		}
		var node *topo.Node
		node, err = t.AddNode(name)
		return node
	}
	n.client = add("client")
	n.router = add("router")
	n.lb = add("lb")
	for i := range backendWeights {
		n.backends = append(n.backends, add(fmt.Sprintf("backend%d", i+1)))
	}
	if err != nil {
		return nil, err
	}

	link := func(a, b topo.LinkEnd) *topo.Link {
		if err != nil {
			return nil
		}
		var l *topo.Link
		if l, err = t.AddLink(a, b); err == nil {
			err = l.PinNeighbors()
		}
		n.links = append(n.links, l)
		return l
	}
	n.clientLink = link(end(n.client, clientNet, 2), end(n.router, clientNet, 1))
	n.lbLink = link(end(n.router, lbNet, 1), end(n.lb, lbNet, 2))
	for i, b := range n.backends {
		link(end(n.router, backendNet(i+1), 1), end(b, backendNet(i+1), 2))
	}
	if err != nil {
		return nil, err
	}

	if err := n.router.EnableForwarding(); err != nil {
		return nil, err
	}
	routes := []struct {
		node *topo.Node
		r    topo.Route
	}{
		{n.client, topo.Route{Dst: netip.MustParsePrefix("0.0.0.0/0"), Via: host(clientNet, 1)}},
		{n.lb, topo.Route{Dst: netip.MustParsePrefix("0.0.0.0/0"), Via: host(lbNet, 1)}},
		// What BGP would announce from the LB node in production.
		{n.router, topo.Route{Dst: netip.PrefixFrom(vipAddr, 32), Via: host(lbNet, 2)}},
	}
	for i, b := range n.backends {
		// Backends answer clients directly (DSR), not through the LB.
		routes = append(routes, struct {
			node *topo.Node
			r    topo.Route
		}{b, topo.Route{Dst: netip.MustParsePrefix("0.0.0.0/0"), Via: host(backendNet(i+1), 1)}})
	}
	for _, r := range routes {
		if err := r.node.AddRoute(r.r); err != nil {
			return nil, err
		}
	}
	// Real clients' packets arrive with complete checksums (the sender's
	// NIC filled them in). A veth with transmit offload leaves them
	// partial instead: the L4 checksum field holds only the pseudo-header
	// sum. The LB derives the outer UDP checksum from the inner one, so
	// such packets would get a wrong outer checksum and the backends'
	// kernels would drop them all in native mode; in generic mode the
	// packet stays marked "checksum partial" and no receiver checks
	// anything. The client therefore computes its checksums itself.
	if err := n.client.SetTxChecksum(n.clientLink.A.Iface, false); err != nil {
		return nil, err
	}
	return n, nil
}

// clientAddr is the client's address.
func clientAddr() netip.Addr { return host(clientNet, 2) }

// lbAddr is the LB node's address, the outer source of GUE packets.
func lbAddr() netip.Addr { return host(lbNet, 2) }

// backendAddr is backend i's (0-based) address.
func backendAddr(i int) netip.Addr { return host(backendNet(i+1), 2) }
