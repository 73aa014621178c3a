package interop

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/dataplane/attach"
	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/dataplane/lb"
	"github.com/sluice-dp/sluice/internal/testenv"
	"github.com/sluice-dp/sluice/sim/topo"
	"github.com/sluice-dp/sluice/sim/traffic"
)

// The topology: client — router — lb1 (XDP LB on a stick), router —
// backend. The router sends the VIPs to lb1, which encapsulates toward the
// backend and bounces the packet back to the router; the backend's kernel
// decapsulates, and its answers go from the VIP straight to the client.
var (
	clientV4, clientV6   = pfx("10.100.1.2/24"), pfx("fd00:1::2/64")
	routerC4, routerC6   = pfx("10.100.1.1/24"), pfx("fd00:1::1/64")
	routerL4, routerL6   = pfx("10.100.2.1/24"), pfx("fd00:2::1/64")
	lbV4, lbV6           = pfx("10.100.2.2/24"), pfx("fd00:2::2/64")
	routerB4, routerB6   = pfx("10.100.11.1/24"), pfx("fd00:11::1/64")
	backendV4, backendV6 = pfx("10.100.11.2/24"), pfx("fd00:11::2/64")

	vipNet4, vipNet6 = pfx("192.0.2.0/24"), pfx("2001:db8:40::/64")
)

// guePort is the LB's default GUE port, which the backend's fou listens on.
const guePort = 6080

// Names of the backend's decapsulating devices.
const (
	tun4 = "tun4" // ipip: IPv4 in IPv4, directly or after fou
	tun6 = "tun6" // ip6tnl mode any: IPv6 or IPv4 in IPv6, directly or after fou
)

// Kernel features the cases need, as named in skip messages.
const (
	featFOU4   = "FOU (ip fou add port 6080 gue)"
	featFOU6   = "FOU over IPv6 (ip -6 fou add port 6080 gue)"
	featIPIP   = "IPIP (ip link add type ipip)"
	featIP6TNL = "IPv6 tunnels (ip link add type ip6tnl)"
)

// features are all of them, in the order skip messages list them.
var features = []string{featFOU4, featFOU6, featIPIP, featIP6TNL}

// decapCase is one encapsulation the backend's kernel must undo.
type decapCase struct {
	name    string
	vip     lb.VIP
	encap   lb.Encap
	backend netip.Addr
	needs   []string
	dev     string // the tunnel device the inner packets come out of
	// noUDPChecksum sends the UDP requests with a zero UDP checksum
	// (IPv4 only), the one case where the LB sums the payload itself to
	// get the outer GUE checksum right.
	noUDPChecksum bool
}

func (c decapCase) url() string {
	return "http://" + netip.AddrPortFrom(c.vip.Addr, c.vip.Port).String() + "/"
}

var decapCases = []decapCase{
	{name: "gue ipv4 in ipv4 tcp", vip: vip("192.0.2.10:80", l4.TCP), encap: lb.GUE, backend: backendV4.Addr(),
		needs: []string{featFOU4, featIPIP}, dev: tun4},
	{name: "gue ipv4 in ipv4 udp", vip: vip("192.0.2.10:53", l4.UDP), encap: lb.GUE, backend: backendV4.Addr(),
		needs: []string{featFOU4, featIPIP}, dev: tun4},
	{name: "gue ipv4 in ipv4 udp without checksum", vip: vip("192.0.2.10:54", l4.UDP), encap: lb.GUE, backend: backendV4.Addr(),
		needs: []string{featFOU4, featIPIP}, dev: tun4, noUDPChecksum: true},
	{name: "ipip tcp", vip: vip("192.0.2.11:80", l4.TCP), encap: lb.IPIP, backend: backendV4.Addr(),
		needs: []string{featIPIP}, dev: tun4},
	{name: "gue ipv6 in ipv6 tcp", vip: vip("[2001:db8:40::10]:80", l4.TCP), encap: lb.GUE, backend: backendV6.Addr(),
		needs: []string{featFOU6, featIP6TNL}, dev: tun6},
	{name: "gue ipv6 in ipv6 udp", vip: vip("[2001:db8:40::10]:53", l4.UDP), encap: lb.GUE, backend: backendV6.Addr(),
		needs: []string{featFOU6, featIP6TNL}, dev: tun6},
	{name: "ip6ip6 tcp", vip: vip("[2001:db8:40::11]:80", l4.TCP), encap: lb.IPIP, backend: backendV6.Addr(),
		needs: []string{featIP6TNL}, dev: tun6},
	{name: "gue ipv4 in ipv6 tcp", vip: vip("192.0.2.12:80", l4.TCP), encap: lb.GUE, backend: backendV6.Addr(),
		needs: []string{featFOU6, featIP6TNL}, dev: tun6},
	{name: "ipv4 in ipv6 tcp", vip: vip("192.0.2.13:80", l4.TCP), encap: lb.IPIP, backend: backendV6.Addr(),
		needs: []string{featIP6TNL}, dev: tun6},
}

// Requests per TCP case (over tcpConns connections) and per UDP case.
const (
	tcpRequests = 20
	tcpConns    = 4
	udpRequests = 20
)

// requestTimeout is generous: in the kernel matrix the guests are emulated
// (TCG) and a round trip can take far longer than on hardware. It bounds
// waiting, it is not a performance assertion.
const requestTimeout = 20 * time.Second

// TestKernelDecap sends real TCP and UDP traffic through the XDP load
// balancer to a backend where only the Linux kernel decapsulates (fou for
// GUE, ipip/ip6tnl devices for the tunnels) and an ordinary server owns the
// VIP on lo: every request must be answered, straight from the VIP (DSR);
// the LB must have encapsulated the VIP's packets as configured, the
// kernel's tunnel device must have received them, and the backend's UDP
// stack must have found no bad checksum, in GUE's outer header or inside.
func TestKernelDecap(t *testing.T) {
	testenv.RequirePriv(t)
	tp, err := topo.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tp.Close(); err != nil {
			t.Errorf("close topology: %v", err)
		}
	})
	nodes := map[string]*topo.Node{}
	for _, name := range []string{"backend", "client", "router", "lb1"} {
		if nodes[name], err = tp.AddNode(name); err != nil {
			t.Fatal(err)
		}
	}
	backend, client, router, lbNode := nodes["backend"], nodes["client"], nodes["router"], nodes["lb1"]

	link := func(a *topo.Node, aAddrs []netip.Prefix, b *topo.Node, bAddrs []netip.Prefix) *topo.Link {
		t.Helper()
		l, err := tp.AddLink(topo.LinkEnd{Node: a, Addrs: aAddrs}, topo.LinkEnd{Node: b, Addrs: bAddrs})
		if err != nil {
			t.Fatal(err)
		}
		// No ARP or NDP: the only packets are the test's.
		if err := l.PinNeighbors(); err != nil {
			t.Fatal(err)
		}
		return l
	}
	clientLink := link(client, []netip.Prefix{clientV4, clientV6}, router, []netip.Prefix{routerC4, routerC6})
	lbLink := link(router, []netip.Prefix{routerL4, routerL6}, lbNode, []netip.Prefix{lbV4, lbV6})
	link(router, []netip.Prefix{routerB4, routerB6}, backend, []netip.Prefix{backendV4, backendV6})

	// The kernel's decapsulation comes first: without it there is
	// nothing to test, and a kernel that lacks all of it (the
	// development host's) skips the test here.
	lacks := setupDecap(t, backend)
	if len(lacks) == len(features) {
		testenv.SkipUnless(t, false, "kernel lacks FOU and IP tunnels: "+joinLacks(lacks))
	}

	if err := router.EnableForwarding(); err != nil {
		t.Fatal(err)
	}
	// The client's packets carry complete checksums, as a real NIC's do:
	// the LB derives the outer GUE checksum from the inner one.
	if err := client.SetTxChecksum(clientLink.A.Iface, false); err != nil {
		t.Fatal(err)
	}
	routes := []struct {
		node *topo.Node
		r    topo.Route
	}{
		{client, topo.Route{Dst: pfx("0.0.0.0/0"), Via: routerC4.Addr()}},
		{client, topo.Route{Dst: pfx("::/0"), Via: routerC6.Addr()}},
		{router, topo.Route{Dst: vipNet4, Via: lbV4.Addr()}},
		{router, topo.Route{Dst: vipNet6, Via: lbV6.Addr()}},
		{lbNode, topo.Route{Dst: pfx("0.0.0.0/0"), Via: routerL4.Addr()}},
		{lbNode, topo.Route{Dst: pfx("::/0"), Via: routerL6.Addr()}},
		{backend, topo.Route{Dst: pfx("0.0.0.0/0"), Via: routerB4.Addr()}},
		{backend, topo.Route{Dst: pfx("::/0"), Via: routerB6.Addr()}},
	}
	for _, r := range routes {
		if err := r.node.AddRoute(r.r); err != nil {
			t.Fatal(err)
		}
	}

	// The application: a server on each VIP, which the backend owns on lo.
	for _, c := range decapCases {
		addLoopback(t, backend, c.vip.Addr)
		serve(t, backend, c)
	}

	l := startLB(t, lbNode, lbLink)

	for _, c := range decapCases {
		t.Run(c.name, func(t *testing.T) {
			for _, f := range c.needs {
				why, missing := lacks[f]
				testenv.SkipUnless(t, !missing, "kernel lacks "+f+": "+why)
			}
			before := snapshot(t, l, backend, c, false)
			if c.vip.Proto == l4.TCP {
				checkHTTP(t, client, c)
			} else {
				checkUDP(t, client, c)
			}
			after := snapshot(t, l, backend, c, true)
			checkCounters(t, c, before, after)
		})
	}
}

// setupDecap configures the backend's kernel to decapsulate everything the
// LB sends it: fou on the GUE port for both families, an ipip device and an
// ip6tnl device in "any" mode, both bound to the backend's address with any
// remote (the LB's IPIP outer source varies per flow). It returns the
// features the kernel lacks with the error that says so; any other failure
// fails the test, so that a broken setup never passes for a missing feature.
func setupDecap(t *testing.T, n *topo.Node) map[string]string {
	t.Helper()
	lacks := map[string]string{}
	try := func(feature string, err error) {
		t.Helper()
		switch {
		case err == nil:
		case kernelLacks(err):
			lacks[feature] = err.Error()
		default:
			t.Fatalf("set up %s in %s: %v", feature, n.Name(), err)
		}
	}
	for _, f := range []struct {
		feature string
		family  string
	}{{featFOU4, "-4"}, {featFOU6, "-6"}} {
		try(f.feature, fouAdd(n, f.family))
	}
	h := n.Netlink()
	try(featIPIP, addTunnel(n, &netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: tun4}, Local: backendV4.Addr().AsSlice()}))
	// Proto 0 is ip6tnl's "any" mode: IPv6 and IPv4 inside IPv6.
	try(featIP6TNL, addTunnel(n, &netlink.Ip6tnl{LinkAttrs: netlink.LinkAttrs{Name: tun6}, Local: backendV6.Addr().AsSlice(), Proto: 0}))
	if _, missing := lacks[featIP6TNL]; !missing {
		// New interfaces of a topology node start with IPv6 off; the
		// inner IPv6 packets come out of this one.
		if err := n.SetSysctl("net/ipv6/conf/"+tun6+"/disable_ipv6", "0"); err != nil {
			t.Fatal(err)
		}
	}
	for _, dev := range []string{tun4, tun6} {
		if _, err := h.LinkByName(dev); err != nil {
			continue
		}
		// The decapsulated packets arrive on the tunnel, the answers leave
		// through the uplink: reverse-path filtering must be off.
		if err := n.SetSysctl("net/ipv4/conf/"+dev+"/rp_filter", "0"); err != nil {
			t.Fatal(err)
		}
	}
	return lacks
}

// fouAdd runs `ip -n <netns> <family> fou add port 6080 gue`, iproute2 being
// the way operators configure fou. It asks the kernel for its "fou" generic
// netlink family first, which loads the module if there is one: a kernel
// without it answers ENOENT.
func fouAdd(n *topo.Node, family string) error {
	err := n.Do(func() error {
		_, err := netlink.GenlFamilyGet("fou")
		return err
	})
	if err != nil {
		return fmt.Errorf("generic netlink family fou: %w", err)
	}
	args := []string{"-n", n.Netns(), family, "fou", "add", "port", strconv.Itoa(guePort), "gue"}
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// addTunnel creates and brings up a tunnel device in n.
func addTunnel(n *topo.Node, dev netlink.Link) error {
	h := n.Netlink()
	if err := h.LinkAdd(dev); err != nil {
		return fmt.Errorf("link add %s type %s: %w", dev.Attrs().Name, dev.Type(), err)
	}
	if err := h.LinkSetUp(dev); err != nil {
		return fmt.Errorf("link set %s up: %w", dev.Attrs().Name, err)
	}
	return nil
}

// kernelLacks tells a kernel without the feature from a failed setup: the
// generic netlink family "fou" does not exist (ENOENT) or the link kind is
// unknown (EOPNOTSUPP), once the kernel has tried to load the module.
func kernelLacks(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EOPNOTSUPP)
}

func joinLacks(lacks map[string]string) string {
	var parts []string
	for _, f := range features {
		if why, ok := lacks[f]; ok {
			parts = append(parts, f+": "+why)
		}
	}
	return strings.Join(parts, "; ")
}

// startLB loads the LB for lb1's link to the router, adds every case's VIP
// with its encapsulation and backend, and attaches it in native mode.
func startLB(t *testing.T, n *topo.Node, toRouter *topo.Link) *lb.LB {
	t.Helper()
	lbEnd, routerEnd := toRouter.B, toRouter.A
	l, err := lb.Load(lb.Options{}, lb.Config{
		Seed:     0x1e7,
		SourceV4: lbEnd.Addr4(), SourceV6: lbEnd.Addr6(),
		GatewayMAC: routerEnd.MAC,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	for _, c := range decapCases {
		if err := l.AddVIP(c.vip, lb.VIPOptions{Encap: c.encap}); err != nil {
			t.Fatal(err)
		}
		if err := l.SetBackends(c.vip, []lb.Backend{{Addr: c.backend, Weight: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	// Native XDP_TX into a veth is delivered only when the receiving end
	// runs an XDP program too.
	if err := routerEnd.Node.AttachXDPPass(routerEnd.Iface); err != nil {
		t.Fatal(err)
	}
	var att *attach.XDPAttachment
	err = n.Do(func() error {
		var err error
		att, err = l.Attach(lbEnd.Iface, attach.Native)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { att.Close() })
	return l
}

// addLoopback puts addr on n's lo, as a DSR backend owns its VIPs.
func addLoopback(t *testing.T, n *topo.Node, addr netip.Addr) {
	t.Helper()
	h := n.Netlink()
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if addr.Is6() {
		if err := n.SetSysctl("net/ipv6/conf/lo/disable_ipv6", "0"); err != nil {
			t.Fatal(err)
		}
	}
	bits := addr.BitLen()
	a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(bits, bits)}, Flags: unix.IFA_F_NODAD}
	if err := h.AddrAdd(lo, a); err != nil && !errors.Is(err, unix.EEXIST) {
		t.Fatalf("vip %v on lo of %s: %v", addr, n.Name(), err)
	}
}

// serve runs the case's application on the backend: HTTP on a TCP VIP, a
// UDP echo on a UDP VIP. Servers stop before the topology is closed.
func serve(t *testing.T, n *topo.Node, c decapCase) {
	t.Helper()
	addr := netip.AddrPortFrom(c.vip.Addr, c.vip.Port)
	var stop func() error
	var err error
	if c.vip.Proto == l4.TCP {
		stop, err = traffic.ServeHTTP(n, addr)
	} else {
		stop, err = traffic.ServeUDPEcho(n, addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
}

// checkHTTP makes HTTP requests to the case's VIP from the client: every
// one must be answered by the backend's server.
func checkHTTP(t *testing.T, client *topo.Node, c decapCase) {
	t.Helper()
	res, err := traffic.HTTPLoad(context.Background(), client, traffic.HTTPSpec{
		URL: c.url(), Requests: tcpRequests, Connections: tcpConns, Timeout: requestTimeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != tcpRequests || res.ServedBy["backend"] != tcpRequests {
		t.Errorf("%s: %d of %d requests answered (by %v; status %v, errors %v)",
			c.url(), res.OK, tcpRequests, res.ServedBy, res.Status, res.Errors)
	}
}

// checkUDP sends UDP requests to the case's VIP from the client, each from
// its own socket (its own flow): every one must be echoed by the backend,
// with the VIP as the reply's source (a connected socket accepts nothing
// else).
func checkUDP(t *testing.T, client *topo.Node, c decapCase) {
	t.Helper()
	dst := netip.AddrPortFrom(c.vip.Addr, c.vip.Port)
	if c.noUDPChecksum {
		answered := udpWithoutChecksum(t, client, dst, udpRequests)
		if answered != udpRequests {
			t.Errorf("%v: %d of %d requests without UDP checksum answered", dst, answered, udpRequests)
		}
		return
	}
	res, err := traffic.UDPRequests(context.Background(), client, dst, udpRequests, requestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if res.Answered != udpRequests || res.AnsweredBy["backend"] != udpRequests {
		t.Errorf("%v: %d of %d requests answered (by %v)", dst, res.Answered, res.Sent, res.AnsweredBy)
	}
}

// udpWithoutChecksum sends n datagrams to dst from n sockets in node whose
// UDP checksum is 0 (SO_NO_CHECK: "no checksum" is legal in IPv4) and counts
// the echoes that come back.
func udpWithoutChecksum(t *testing.T, node *topo.Node, dst netip.AddrPort, n int) int {
	t.Helper()
	conns := make([]*net.UDPConn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	err := node.Do(func() error {
		for range n {
			c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst))
			if err != nil {
				return err
			}
			conns = append(conns, c)
			raw, err := c.SyscallConn()
			if err != nil {
				return err
			}
			var serr error
			if err := raw.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NO_CHECK, 1)
			}); err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("setsockopt SO_NO_CHECK: %w", serr)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("udp sockets without checksum in %s: %v", node.Name(), err)
	}
	answered := 0
	for i, c := range conns {
		req := []byte("no checksum #" + strconv.Itoa(i))
		if _, err := c.Write(req); err != nil {
			t.Fatalf("send to %v: %v", dst, err)
		}
		if err := c.SetReadDeadline(time.Now().Add(requestTimeout)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 512)
		m, err := c.Read(buf)
		if err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			t.Logf("request %d to %v: %v", i, dst, err)
			continue
		}
		if string(buf[:m]) == "backend:"+string(req) {
			answered++
		}
	}
	return answered
}

// counts are the counters a case compares before and after its traffic.
type counts struct {
	vip      uint64 // packets the LB balanced for the case's VIP
	encap    uint64 // packets the LB encapsulated the way the VIP is configured
	devRx    uint64 // packets the case's tunnel device received
	devErrs  uint64 // and its receive errors and drops
	csumErrs uint64 // UDP (of the case's outer family) datagrams with a bad checksum
}

// snapshot reads the case's counters. The LB's are read twice because
// packets of the case's closing connections may still be on their way:
// before the traffic, the VIP counter is taken from the later read and the
// encapsulation counter from the earlier; after it, the other way round. A
// packet counted between two reads then can only make the VIP's count
// smaller and the encapsulation count larger than they are, so it can never
// fail checkCounters' comparison of the two.
func snapshot(t *testing.T, l *lb.LB, backend *topo.Node, c decapCase, after bool) counts {
	t.Helper()
	stat := "encap_" + c.encap.String()
	first, err := l.Counters()
	if err != nil {
		t.Fatal(err)
	}
	second, err := l.Counters()
	if err != nil {
		t.Fatal(err)
	}
	s := counts{vip: second.VIPs[c.vip].Packets, encap: first.Stats[stat]}
	if after {
		s = counts{vip: first.VIPs[c.vip].Packets, encap: second.Stats[stat]}
	}
	dev, err := backend.Netlink().LinkByName(c.dev)
	if err != nil {
		t.Fatal(err)
	}
	st := dev.Attrs().Statistics
	s.devRx, s.devErrs = st.RxPackets, st.RxErrors+st.RxDropped
	if s.csumErrs, err = udpChecksumErrors(backend, c.backend.Is6()); err != nil {
		t.Fatal(err)
	}
	return s
}

// checkCounters checks what the traffic did to the counters: the LB
// balanced the VIP's packets and encapsulated at least that many the way
// the VIP is configured, the kernel's tunnel device received at least one
// packet per request without error, and no UDP checksum was wrong.
func checkCounters(t *testing.T, c decapCase, before, after counts) {
	t.Helper()
	requests := uint64(udpRequests)
	if c.vip.Proto == l4.TCP {
		requests = tcpRequests
	}
	vipPkts, encap := after.vip-before.vip, after.encap-before.encap
	if vipPkts < requests {
		t.Errorf("lb balanced %d packets of %v, want at least one per request (%d)", vipPkts, c.vip, requests)
	}
	// Other VIPs' packets still in flight may add to the encapsulation
	// counter, never subtract from it.
	if encap < vipPkts {
		t.Errorf("lb counted %d encap_%s, fewer than the %d packets of %v: the VIP's encapsulation is not %s",
			encap, c.encap, vipPkts, c.vip, c.encap)
	}
	if rx := after.devRx - before.devRx; rx < requests {
		t.Errorf("kernel device %s received %d packets, want at least one per request (%d)", c.dev, rx, requests)
	}
	if e := after.devErrs - before.devErrs; e != 0 {
		t.Errorf("kernel device %s counted %d receive errors or drops", c.dev, e)
	}
	if e := after.csumErrs - before.csumErrs; e != 0 {
		t.Errorf("backend counted %d UDP checksum errors (outer GUE or inner UDP)", e)
	}
}

// udpChecksumErrors reads the backend's InCsumErrors of UDP over IPv4 or
// IPv6, the counter of datagrams dropped for a bad checksum: fou counts a
// GUE packet with a wrong outer checksum there, and the inner UDP's there
// too.
func udpChecksumErrors(n *topo.Node, v6 bool) (uint64, error) {
	var v uint64
	err := n.Do(func() error {
		// thread-self: /proc/net would show the namespace of the
		// process's main thread, not this thread's.
		if v6 {
			return readSNMP6("/proc/thread-self/net/snmp6", "Udp6InCsumErrors", &v)
		}
		return readSNMP("/proc/thread-self/net/snmp", "Udp", "InCsumErrors", &v)
	})
	if err != nil {
		return 0, fmt.Errorf("udp checksum errors in %s: %w", n.Name(), err)
	}
	return v, nil
}

// readSNMP reads a field of /proc/net/snmp, where each protocol has a line
// of names followed by a line of values.
func readSNMP(path, proto, field string, v *uint64) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	lines := strings.Split(string(b), "\n")
	for i := 0; i+1 < len(lines); i++ {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != proto+":" || len(values) != len(names) || values[0] != proto+":" {
			continue
		}
		for j, name := range names {
			if name == field {
				*v, err = strconv.ParseUint(values[j], 10, 64)
				return err
			}
		}
	}
	return fmt.Errorf("%s: no %s %s", path, proto, field)
}

// readSNMP6 reads a "name value" line of /proc/net/snmp6.
func readSNMP6(path, field string, v *uint64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		kv := strings.Fields(sc.Text())
		if len(kv) == 2 && kv[0] == field {
			*v, err = strconv.ParseUint(kv[1], 10, 64)
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return fmt.Errorf("%s: no %s", path, field)
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func vip(addrPort string, proto l4.Proto) lb.VIP {
	ap := netip.MustParseAddrPort(addrPort)
	return lb.VIP{Addr: ap.Addr(), Port: ap.Port(), Proto: proto}
}
