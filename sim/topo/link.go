package topo

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// LinkEnd describes one end of a veth link to create.
type LinkEnd struct {
	// Node is where this end lives; required.
	Node *Node
	// Iface names the interface inside Node. Default: the other end's
	// node name, so that `ip -n <ns> addr` reads as "the link to router".
	// At most 15 bytes (IFNAMSIZ).
	Iface string
	// MAC is the interface's address. Default: a random locally
	// administered unicast address.
	MAC net.HardwareAddr
	// Addrs are IPv4 and IPv6 addresses with their prefix length
	// ("10.100.1.2/24"). IPv6 is enabled on the interface only if one of
	// them is IPv6.
	Addrs []netip.Prefix
	// Queues is the number of receive and transmit queues of the
	// interface; 0 leaves the kernel's default (one). More queues let
	// several CPUs send and receive on the link at once.
	Queues int
	// MTU is the interface's MTU; 0 leaves the kernel's default (1500).
	// A larger MTU lets traffic sources send packets that an LB must
	// refuse with "packet too big" at its tunnel MTU.
	MTU int
}

// Endpoint is one end of a created link, defaults filled in.
type Endpoint struct {
	// Node is the node the interface is in.
	Node *Node
	// Iface is the interface's name inside Node.
	Iface string
	// Index is the interface index inside Node's namespace; it means
	// nothing elsewhere.
	Index int
	// MAC is the interface's address, given or generated.
	MAC net.HardwareAddr
	// Addrs are the interface's addresses as given.
	Addrs []netip.Prefix
}

// Addr4 returns the end's first IPv4 address, or the zero Addr.
func (e Endpoint) Addr4() netip.Addr {
	for _, p := range e.Addrs {
		if p.Addr().Is4() {
			return p.Addr()
		}
	}
	return netip.Addr{}
}

// Addr6 returns the end's first IPv6 address, or the zero Addr.
func (e Endpoint) Addr6() netip.Addr {
	for _, p := range e.Addrs {
		if p.Addr().Is6() {
			return p.Addr()
		}
	}
	return netip.Addr{}
}

// Link is a veth pair between two nodes.
type Link struct {
	// A and B are the ends, in the order AddLink was given them.
	A, B Endpoint
}

// String names the link by its ends, "client/router <-> router/client",
// for error messages and logs.
func (l *Link) String() string {
	return fmt.Sprintf("%s/%s <-> %s/%s", l.A.Node.name, l.A.Iface, l.B.Node.name, l.B.Iface)
}

// AddLink creates a veth pair with one end in each node, sets MACs and
// addresses and brings both ends up. The pair is created inside a.Node's
// namespace with its peer placed directly in b.Node's, so it never exists
// in the caller's namespace, where a crash could strand it.
func (t *Topology) AddLink(a, b LinkEnd) (_ *Link, err error) {
	if a.Node == nil || b.Node == nil {
		return nil, fmt.Errorf("add link: %w: both ends need a node", ErrInvalid)
	}
	ea, err := endpoint(a, b.Node.name)
	if err != nil {
		return nil, fmt.Errorf("add link %s-%s: %w", a.Node.name, b.Node.name, err)
	}
	eb, err := endpoint(b, a.Node.name)
	if err != nil {
		return nil, fmt.Errorf("add link %s-%s: %w", a.Node.name, b.Node.name, err)
	}
	l := &Link{A: ea, B: eb}
	if a.Node == b.Node && ea.Iface == eb.Iface {
		return nil, fmt.Errorf("add link %v: %w: both ends named %s in one node", l, ErrInvalid, ea.Iface)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, fmt.Errorf("add link %v: %w", l, ErrClosed)
	}
	if t.byName[a.Node.name] != a.Node || t.byName[b.Node.name] != b.Node {
		return nil, fmt.Errorf("add link %v: %w: node of another topology", l, ErrInvalid)
	}

	// The kernel applies a carrier change right away only for a device
	// whose ifindex differs from its link's (the veth peer's); otherwise it
	// batches the change for up to a second, and the interface stays
	// without carrier, IPv6 addresses tentative, that long. Two fresh
	// namespaces number their first veth ends alike, so this end gets an
	// index from a range the peer's automatic one never reaches.
	t.links++
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{Name: ea.Iface, HardwareAddr: ea.MAC, Index: linkIndexBase + t.links,
			NumTxQueues: a.Queues, NumRxQueues: a.Queues, MTU: a.MTU},
		PeerName:         eb.Iface,
		PeerHardwareAddr: eb.MAC,
		PeerNamespace:    netlink.NsFd(b.Node.ns),
		PeerNumTxQueues:  uint32(b.Queues),
		PeerNumRxQueues:  uint32(b.Queues),
		PeerMTU:          uint32(b.MTU),
	}
	if err := a.Node.nl.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("create veth %v: %w", l, err)
	}
	defer func() {
		// Deleting one end deletes the pair; a half-configured link would
		// otherwise linger until Close.
		if err != nil {
			if lk, lerr := a.Node.nl.LinkByName(ea.Iface); lerr == nil {
				err = errors.Join(err, a.Node.nl.LinkDel(lk))
			}
		}
	}()
	for _, e := range []*Endpoint{&l.A, &l.B} {
		if err := configure(e); err != nil {
			return nil, fmt.Errorf("add link %v: %w", l, err)
		}
	}
	// A packet sent before the kernel has processed the carrier change is
	// dropped (no qdisc yet) or, over IPv6, finds its address tentative;
	// a caller must be able to send as soon as AddLink returns.
	for _, e := range []Endpoint{l.A, l.B} {
		if err := waitReady(e, linkReadyTimeout); err != nil {
			return nil, fmt.Errorf("add link %v: %w", l, err)
		}
	}
	return l, nil
}

// maxQueues bounds LinkEnd.Queues; veth accepts up to 4096, far more than
// a simulation on a few CPUs can use.
const maxQueues = 64

// minMTU and maxMTU bound LinkEnd.MTU: IPv6's minimum and veth's maximum
// with a jumbo frame's worth of room.
const (
	minMTU = 1280
	maxMTU = 9000
)

// linkIndexBase starts the interface indexes AddLink picks; see AddLink.
const linkIndexBase = 10000

// linkReadyTimeout bounds the wait for a new link to come up. The kernel
// needs milliseconds; a second is its longest batching delay.
const linkReadyTimeout = 3 * time.Second

// waitReady waits until an end is operationally up and none of its IPv6
// addresses is tentative.
func waitReady(e Endpoint, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ready, why, err := isReady(e)
		if err != nil || ready {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s in netns %s not ready after %v: %s", e.Iface, e.Node.netns, timeout, why)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func isReady(e Endpoint) (bool, string, error) {
	lk, err := e.Node.nl.LinkByIndex(e.Index)
	if err != nil {
		return false, "", fmt.Errorf("find %s in netns %s: %w", e.Iface, e.Node.netns, err)
	}
	if st := lk.Attrs().OperState; st != netlink.OperUp {
		return false, "operational state " + st.String(), nil
	}
	if !e.Addr6().IsValid() {
		return true, "", nil
	}
	// An IPv6 address without DAD is never tentative, but the kernel
	// still finishes setting it up in a work queue after carrier: until it
	// has joined the address's solicited-node group, neighbour
	// solicitations for it go unanswered (and the sender retries only a
	// second later). The local route is installed after the join, so its
	// presence says the address is usable.
	for _, p := range e.Addrs {
		if !p.Addr().Is6() {
			continue
		}
		filter := &netlink.Route{Table: unix.RT_TABLE_LOCAL, Dst: prefixIPNet(netip.PrefixFrom(p.Addr(), 128))}
		routes, err := e.Node.nl.RouteListFiltered(netlink.FAMILY_V6, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_DST)
		if err != nil {
			return false, "", fmt.Errorf("list local routes in netns %s: %w", e.Node.netns, err)
		}
		if len(routes) == 0 {
			return false, "address " + p.Addr().String() + " has no local route yet", nil
		}
	}
	return true, "", nil
}

// endpoint validates an end and fills in its defaults.
func endpoint(e LinkEnd, peer string) (Endpoint, error) {
	ep := Endpoint{Node: e.Node, Iface: e.Iface, MAC: e.MAC, Addrs: e.Addrs}
	if ep.Iface == "" {
		ep.Iface = peer
	}
	if len(ep.Iface) >= unix.IFNAMSIZ || strings.ContainsAny(ep.Iface, "/: \t\n") || ep.Iface == "." || ep.Iface == ".." {
		return ep, fmt.Errorf("interface %q in %s: %w name: want at most %d bytes, no '/', ':' or spaces",
			ep.Iface, e.Node.name, ErrInvalid, unix.IFNAMSIZ-1)
	}
	if ep.MAC == nil {
		ep.MAC = make(net.HardwareAddr, 6)
		if _, err := rand.Read(ep.MAC); err != nil {
			return ep, fmt.Errorf("random mac: %w", err)
		}
		ep.MAC[0] = ep.MAC[0]&^0x01 | 0x02 // unicast, locally administered
	} else if len(ep.MAC) != 6 || ep.MAC[0]&0x01 != 0 {
		return ep, fmt.Errorf("interface %s in %s: %w mac %v: want a 6-byte unicast address", ep.Iface, e.Node.name, ErrInvalid, ep.MAC)
	}
	if e.MTU != 0 && (e.MTU < minMTU || e.MTU > maxMTU) {
		return ep, fmt.Errorf("interface %s in %s: %w mtu %d: want %d to %d", ep.Iface, e.Node.name, ErrInvalid, e.MTU, minMTU, maxMTU)
	}
	if e.Queues < 0 || e.Queues > maxQueues {
		return ep, fmt.Errorf("interface %s in %s: %w queue count %d: want 0 to %d", ep.Iface, e.Node.name, ErrInvalid, e.Queues, maxQueues)
	}
	for _, p := range ep.Addrs {
		if !p.IsValid() || p.Addr().Zone() != "" || p.Addr().Is4In6() {
			return ep, fmt.Errorf("interface %s in %s: %w address %v", ep.Iface, e.Node.name, ErrInvalid, p)
		}
	}
	return ep, nil
}

// configure gives a freshly created interface its addresses and brings it
// up.
func configure(e *Endpoint) error {
	n := e.Node
	lk, err := n.nl.LinkByName(e.Iface)
	if err != nil {
		return fmt.Errorf("find %s in netns %s: %w", e.Iface, n.netns, err)
	}
	e.Index = lk.Attrs().Index
	if e.Addr6().IsValid() {
		if err := n.SetSysctl("net/ipv6/conf/"+e.Iface+"/disable_ipv6", "0"); err != nil {
			return err
		}
	}
	for _, p := range e.Addrs {
		addr := &netlink.Addr{IPNet: prefixIPNet(p)}
		if p.Addr().Is6() {
			// Duplicate address detection would keep the address
			// tentative, and unusable for bind, for about a second; no
			// one else can hold it inside a topology.
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := n.nl.AddrAdd(lk, addr); err != nil {
			return fmt.Errorf("add address %v to %s in netns %s: %w", p, e.Iface, n.netns, err)
		}
	}
	if err := n.nl.LinkSetUp(lk); err != nil {
		return fmt.Errorf("set %s up in netns %s: %w", e.Iface, n.netns, err)
	}
	return nil
}

// PinNeighbors adds permanent neighbour entries on each end for every
// address of the other end, so that nothing on the link needs ARP or NDP.
func (l *Link) PinNeighbors() error {
	for _, p := range []struct{ local, remote Endpoint }{{l.A, l.B}, {l.B, l.A}} {
		for _, a := range p.remote.Addrs {
			if err := p.local.Node.AddNeighbor(p.local.Iface, a.Addr(), p.remote.MAC); err != nil {
				return fmt.Errorf("pin neighbors of %v: %w", l, err)
			}
		}
	}
	return nil
}
