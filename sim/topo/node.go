package topo

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Node is one network namespace of a topology.
type Node struct {
	name  string
	netns string
	ns    netns.NsHandle
	nl    *netlink.Handle
	// mounted is set once the namespace's name is ours to delete: after a
	// failed creation the name may belong to someone else.
	mounted bool

	mu    sync.Mutex
	links []link.Link // XDP programs attached by the node, detached on close
}

// Name returns the node's name within the topology ("client").
func (n *Node) Name() string { return n.name }

// Netns returns the namespace's name ("sl1a2b3c-client"), for
// `ip netns exec` and `ip -n`.
func (n *Node) Netns() string { return n.netns }

// Netlink returns a netlink handle bound to the node's namespace: its
// requests act there whatever thread sends them. It is closed with the
// topology.
func (n *Node) Netlink() *netlink.Handle { return n.nl }

// PanicError is what Do panics with when fn panicked: the original value
// with the stack of the goroutine that ran fn, which the re-panic in the
// caller's goroutine would otherwise lose.
type PanicError struct {
	// Node is the namespace fn ran in.
	Node string
	// Value is what fn panicked with.
	Value any
	// Stack is the stack of fn's goroutine at the panic.
	Stack []byte
}

// Error includes the stack, because an uncaught panic prints only this
// text and the stack of the goroutine that re-panicked.
func (p *PanicError) Error() string {
	return fmt.Sprintf("panic in netns %s: %v\n\n%s", p.Node, p.Value, p.Stack)
}

// Unwrap returns the panic value when it is an error.
func (p *PanicError) Unwrap() error {
	err, _ := p.Value.(error)
	return err
}

// Do runs fn on an OS thread that is inside the node's namespace and
// returns fn's error. Sockets fn opens belong to the node's namespace for
// their whole life and can be used from any goroutine afterwards; that is
// the way to send and receive from a node. Goroutines fn starts do NOT run
// in the namespace: a namespace belongs to a thread, and they get other
// threads.
//
// The thread is a fresh one locked to a goroutine of Do's own, and it is
// thrown away afterwards instead of being switched back: a failed switch
// back would leave a thread of the process silently inside the node, and
// the caller's own thread is never touched. If fn panics, Do panics in the
// caller's goroutine with a *PanicError, so the caller's deferred cleanup
// (Topology.Close) runs as for any panic.
func (n *Node) Do(fn func() error) error {
	type outcome struct {
		err      error
		returned bool
		panic    *PanicError
	}
	ch := make(chan outcome, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the runtime ends the thread with the goroutine
		var o outcome
		defer func() {
			if !o.returned {
				if v := recover(); v != nil {
					o.panic = &PanicError{Node: n.netns, Value: v, Stack: debug.Stack()}
				}
			}
			ch <- o
		}()
		n.mu.Lock()
		ns := n.ns
		n.mu.Unlock()
		if !ns.IsOpen() {
			o.err, o.returned = fmt.Errorf("enter netns %s: %w", n.netns, ErrClosed), true
			return
		}
		if err := netns.Set(ns); err != nil {
			o.err, o.returned = fmt.Errorf("enter netns %s: %w", n.netns, err), true
			return
		}
		o.err = fn()
		o.returned = true
	}()
	o := <-ch
	switch {
	case o.panic != nil:
		panic(o.panic)
	case !o.returned:
		// runtime.Goexit, typically t.FailNow called inside fn.
		return fmt.Errorf("in netns %s: function exited with runtime.Goexit (t.Fatal inside Do?)", n.netns)
	}
	return o.err
}

// sysctlPath turns "net.ipv4.ip_forward" or "net/ipv4/conf/eth0.5/rp_filter"
// into a path under /proc/sys. Only net.* is accepted: those are the
// per-namespace sysctls, and any other one would change the host.
func sysctlPath(name string) (string, error) {
	p := name
	if !strings.Contains(p, "/") {
		p = strings.ReplaceAll(p, ".", "/")
	}
	clean := filepath.Clean(p)
	if clean != p || !strings.HasPrefix(p, "net/") {
		return "", fmt.Errorf("sysctl %q: %w: want a net.* name (other sysctls are not per namespace)", name, ErrInvalid)
	}
	return filepath.Join("/proc/sys", p), nil
}

// SetSysctl writes a net.* sysctl in the node's namespace. The name is
// dotted ("net.ipv4.ip_forward") or, when an interface name has a dot in
// it, a path ("net/ipv4/conf/eth0.5/rp_filter").
func (n *Node) SetSysctl(name, value string) error {
	return n.setSysctls([][2]string{{name, value}})
}

// Sysctl reads a net.* sysctl in the node's namespace, without the
// trailing newline.
func (n *Node) Sysctl(name string) (string, error) {
	path, err := sysctlPath(name)
	if err != nil {
		return "", err
	}
	var v []byte
	err = n.Do(func() error {
		// /proc/sys/net resolves to the namespace of the thread that
		// opens the file, which is why this must run inside Do.
		v, err = os.ReadFile(path)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("read sysctl %s in netns %s: %w", name, n.netns, err)
	}
	return strings.TrimSpace(string(v)), nil
}

func (n *Node) setSysctls(kv [][2]string) error {
	paths := make([]string, len(kv))
	for i, p := range kv {
		var err error
		if paths[i], err = sysctlPath(p[0]); err != nil {
			return err
		}
	}
	return n.Do(func() error {
		for i, p := range kv {
			f, err := os.OpenFile(paths[i], os.O_WRONLY, 0)
			if err == nil {
				_, err = f.WriteString(p[1] + "\n")
				err = errors.Join(err, f.Close())
			}
			// Linux 6.1 applies net.ipv6.conf.all.ignore_routes_with_linkdown
			// and then fails the write with EINVAL; what counts is the value
			// the kernel holds afterwards.
			if err != nil {
				if v, rerr := os.ReadFile(paths[i]); rerr == nil && strings.TrimSpace(string(v)) == p[1] {
					continue
				}
				return fmt.Errorf("set sysctl %s=%s in netns %s: %w", p[0], p[1], n.netns, err)
			}
		}
		return nil
	})
}

// EnableForwarding makes the node a router: IPv4 and IPv6 forwarding on,
// reverse-path filtering off, on "all", "default" and every interface that
// exists now, multipath routes hashed on the 5-tuple (L4 policy), and
// next hops on links that are down left out of multipath routes. Routers in a topology see asymmetric paths by design (DSR
// replies bypass the LB), which strict rp_filter would drop; interfaces
// added later inherit "default".
func (n *Node) EnableForwarding() error {
	kv := [][2]string{
		{"net.ipv4.ip_forward", "1"},
		{"net.ipv6.conf.all.forwarding", "1"},
		{"net.ipv4.conf.all.rp_filter", "0"},
		{"net.ipv4.conf.default.rp_filter", "0"},
		// Multipath routes spread flows by their 5-tuple, as the
		// routers in front of LB nodes do; the default (addresses only)
		// would send every flow of one client to one LB node.
		{"net.ipv4.fib_multipath_hash_policy", "1"},
		{"net.ipv6.fib_multipath_hash_policy", "1"},
		// A next hop whose link is down must leave the multipath set,
		// as it would when its BGP session dropped; by default the
		// kernel keeps using it.
		{"net.ipv4.conf.all.ignore_routes_with_linkdown", "1"},
		{"net.ipv6.conf.all.ignore_routes_with_linkdown", "1"},
	}
	links, err := n.nl.LinkList()
	if err != nil {
		return fmt.Errorf("enable forwarding in netns %s: list links: %w", n.netns, err)
	}
	for _, l := range links {
		kv = append(kv, [2]string{"net/ipv4/conf/" + l.Attrs().Name + "/rp_filter", "0"})
	}
	if err := n.setSysctls(kv); err != nil {
		return fmt.Errorf("enable forwarding: %w", err)
	}
	return nil
}

// Route is a static route. Dev may be empty when Via is set; then the
// kernel picks the interface whose subnet holds Via.
type Route struct {
	// Dst is the destination prefix; 0.0.0.0/0 or ::/0 for a default route.
	Dst netip.Prefix
	// Via is the gateway, of Dst's family; zero for an on-link route.
	Via netip.Addr
	// Multipath are the gateways of an equal-cost multipath route, used
	// instead of Via and Dev; each is reached through the interface whose
	// subnet holds it. A forwarding node spreads flows over them by their
	// 5-tuple (see EnableForwarding).
	Multipath []netip.Addr
	// Dev is the outgoing interface's name in the node.
	Dev string
}

// String reads like ip-route(8): "0.0.0.0/0 via 10.0.0.1 dev eth0".
func (r Route) String() string {
	s := r.Dst.String()
	if r.Via.IsValid() {
		s += " via " + r.Via.String()
	}
	for _, v := range r.Multipath {
		s += " nexthop via " + v.String()
	}
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	return s
}

// AddRoute adds a static route to the node's main table.
func (n *Node) AddRoute(r Route) error {
	sameFamily := func(a netip.Addr) bool { return a.Is4() == r.Dst.Addr().Is4() }
	valid := r.Dst.IsValid()
	if len(r.Multipath) > 0 {
		valid = valid && !r.Via.IsValid() && r.Dev == ""
		for _, v := range r.Multipath {
			valid = valid && v.IsValid() && sameFamily(v)
		}
	} else {
		valid = valid && (r.Via.IsValid() || r.Dev != "") && (!r.Via.IsValid() || sameFamily(r.Via))
	}
	if !valid {
		return fmt.Errorf("add route %v in netns %s: %w: want a destination and a same-family gateway, device or multipath gateways", r, n.netns, ErrInvalid)
	}
	rt := &netlink.Route{Dst: prefixIPNet(r.Dst.Masked())}
	if r.Via.IsValid() {
		rt.Gw = r.Via.AsSlice()
	}
	for _, v := range r.Multipath {
		rt.MultiPath = append(rt.MultiPath, &netlink.NexthopInfo{Gw: v.AsSlice()})
	}
	if r.Dev != "" {
		l, err := n.nl.LinkByName(r.Dev)
		if err != nil {
			return fmt.Errorf("add route %v in netns %s: %w", r, n.netns, err)
		}
		rt.LinkIndex = l.Attrs().Index
	}
	if err := n.nl.RouteAdd(rt); err != nil {
		return fmt.Errorf("add route %v in netns %s: %w", r, n.netns, err)
	}
	return nil
}

// SetLinkUp sets interface dev of the node administratively up or down,
// like `ip link set dev up|down`. Taking one end of a veth down takes the
// carrier of the other end with it, so both nodes see the link fail.
func (n *Node) SetLinkUp(dev string, up bool) error {
	l, err := n.nl.LinkByName(dev)
	if err == nil {
		if up {
			err = n.nl.LinkSetUp(l)
		} else {
			err = n.nl.LinkSetDown(l)
		}
	}
	if err != nil {
		return fmt.Errorf("set %s up=%t in netns %s: %w", dev, up, n.netns, err)
	}
	return nil
}

// AddNeighbor adds a permanent neighbour (ARP or NDP) entry on dev. A
// topology that pins its neighbours sends no ARP, so the only packets a
// program sees are the ones the scenario sent.
func (n *Node) AddNeighbor(dev string, addr netip.Addr, mac net.HardwareAddr) error {
	l, err := n.nl.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("add neighbor %v on %s in netns %s: %w", addr, dev, n.netns, err)
	}
	family := netlink.FAMILY_V4
	if !addr.Is4() {
		family = netlink.FAMILY_V6
	}
	neigh := &netlink.Neigh{
		LinkIndex:    l.Attrs().Index,
		Family:       family,
		State:        netlink.NUD_PERMANENT,
		IP:           addr.AsSlice(),
		HardwareAddr: mac,
	}
	if err := n.nl.NeighSet(neigh); err != nil {
		return fmt.Errorf("add neighbor %v on %s in netns %s: %w", addr, dev, n.netns, err)
	}
	return nil
}

// AttachXDPPass attaches, in native mode, an XDP program that passes every
// frame to dev. It exists for veth: a frame that a native XDP program on
// the far end sends back with XDP_TX (or redirects) is delivered only if
// the receiving end has an XDP program itself or has GRO on; otherwise veth
// drops it and counts an xdp_tx_error. The program stays until the
// topology is closed.
func (n *Node) AttachXDPPass(dev string) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "sluice_pass",
		Type: ebpf.XDP,
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 2), // XDP_PASS
			asm.Return(),
		},
		License: "GPL",
	})
	if err != nil {
		return fmt.Errorf("attach xdp pass to %s in netns %s: load: %w", dev, n.netns, err)
	}
	// The link holds its own reference to the program.
	defer prog.Close()
	var lk link.Link
	err = n.Do(func() error {
		// Interface indexes, and XDP attachment, are per namespace.
		ifc, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		lk, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index, Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		return fmt.Errorf("attach xdp pass to %s in netns %s: %w", dev, n.netns, err)
	}
	n.mu.Lock()
	n.links = append(n.links, lk)
	n.mu.Unlock()
	return nil
}

// close releases everything the node holds and deletes its namespace. The
// namespace disappears only when nothing refers to it, so handles are
// closed before the name is removed.
func (n *Node) close() error {
	var errs []error
	n.mu.Lock()
	for _, l := range n.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach xdp in netns %s: %w", n.netns, err))
		}
	}
	n.links = nil
	if n.nl != nil {
		n.nl.Close()
	}
	if n.ns.IsOpen() {
		if err := n.ns.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close netns %s: %w", n.netns, err))
		}
		n.ns = netns.None()
	}
	mounted := n.mounted
	n.mounted = false
	n.mu.Unlock()
	if mounted {
		errs = append(errs, deleteNetns(n.netns))
	}
	return errors.Join(errs...)
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if !p.Addr().Is4() {
		bits = 128
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
}
