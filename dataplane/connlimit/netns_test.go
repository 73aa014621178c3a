package connlimit

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/dataplane/attach"
	"github.com/sluice-dp/sluice/internal/pkttest"
	"github.com/sluice-dp/sluice/internal/testenv"
)

// The test topology: a server namespace and a client namespace joined by a
// veth pair, with these addresses.
var (
	serverV4 = netip.MustParseAddr("10.77.0.1")
	clientV4 = netip.MustParseAddr("10.77.0.2")
	serverV6 = netip.MustParseAddr("fd00:77::1")
	clientV6 = netip.MustParseAddr("fd00:77::2")
)

const (
	serverDev = "cl-srv"
	clientDev = "cl-cli"
)

// topo is two network namespaces joined by a veth pair. Both disappear with
// everything in them when the test ends.
type topo struct {
	server, client netns.NsHandle
}

func newTopo(t *testing.T) *topo {
	t.Helper()
	testenv.RequirePriv(t)
	tp := &topo{server: newNS(t), client: newNS(t)}
	tp.in(t, tp.server, func() {
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: serverDev},
			PeerName:      clientDev,
			PeerNamespace: netlink.NsFd(tp.client),
		}
		if err := netlink.LinkAdd(veth); err != nil {
			t.Fatalf("add veth: %v", err)
		}
	})
	tp.in(t, tp.server, func() { setup(t, serverDev, serverV4, serverV6) })
	tp.in(t, tp.client, func() { setup(t, clientDev, clientV4, clientV6) })
	return tp
}

// newNS creates an empty network namespace without entering it.
func newNS(t *testing.T) netns.NsHandle {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatalf("get netns: %v", err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	if err := netns.Set(orig); err != nil {
		// Stay locked: the runtime then retires the thread rather than
		// reuse it in the wrong namespace.
		runtime.LockOSThread()
		t.Fatalf("return to the original netns: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

func setup(t *testing.T, dev string, v4, v6 netip.Addr) {
	t.Helper()
	for _, name := range []string{"lo", dev} {
		l, err := netlink.LinkByName(name)
		if err != nil {
			t.Fatalf("find %s: %v", name, err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatalf("set %s up: %v", name, err)
		}
		if name == "lo" {
			continue
		}
		for _, a := range []netip.Addr{v4, v6} {
			bits := a.BitLen() - 8
			if a.Is6() {
				bits = 64
			}
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, a.BitLen())}, Flags: unix.IFA_F_NODAD}
			if err := netlink.AddrAdd(l, addr); err != nil {
				t.Fatalf("add %v to %s: %v", a, name, err)
			}
		}
	}
}

// in runs fn on a thread inside ns. Sockets created in fn stay in ns.
func (tp *topo) in(t *testing.T, ns netns.NsHandle, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get netns: %v", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("enter netns: %v", err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			t.Errorf("return to the original netns: %v", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	fn()
}

// loadIn loads a Limiter in the server namespace with ports limited.
func (tp *topo) loadIn(t *testing.T, ports map[uint16]Limit) *Limiter {
	t.Helper()
	var l *Limiter
	tp.in(t, tp.server, func() { l = load(t, Options{}) })
	if err := l.SetPorts(ports); err != nil {
		t.Fatalf("set ports: %v", err)
	}
	return l
}

// startAttached starts l and attaches its XDP program to the server end of
// the veth in mode, until the test ends.
func (tp *topo) startAttached(t *testing.T, l *Limiter, mode attach.Mode) {
	t.Helper()
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	tp.in(t, tp.server, func() {
		at, err := l.Attach(serverDev, mode)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { at.Close() })
	})
}

// server accepts connections on a port of the server namespace and keeps
// them open until the peer closes, then closes its side; Accepted and Open
// count them independently of the program.
type server struct {
	ln     net.Listener
	mu     sync.Mutex
	open   map[net.Conn]bool
	total  int
	wg     sync.WaitGroup
	closed chan struct{}
}

func (tp *topo) listen(t *testing.T, network string, addr netip.AddrPort) *server {
	t.Helper()
	var ln net.Listener
	tp.in(t, tp.server, func() {
		var err error
		ln, err = net.Listen(network, addr.String())
		if err != nil {
			t.Fatalf("listen on %v: %v", addr, err)
		}
	})
	s := &server{ln: ln, open: map[net.Conn]bool{}, closed: make(chan struct{})}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.close)
	return s
}

func (s *server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.open[c] = true
		s.total++
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			var b [64]byte
			for {
				if _, err := c.Read(b[:]); err != nil {
					break
				}
			}
			s.drop(c)
		}()
	}
}

func (s *server) drop(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open[c] {
		delete(s.open, c)
		c.Close()
	}
}

// closeOne closes one accepted connection from the server side.
func (s *server) closeOne() bool {
	s.mu.Lock()
	var c net.Conn
	for k := range s.open {
		c = k
		break
	}
	s.mu.Unlock()
	if c == nil {
		return false
	}
	s.drop(c)
	return true
}

// abortFrom closes with a RST (SO_LINGER 0) the accepted connection whose
// client is remote. The server's socket reaches TCP_CLOSE at once, whatever
// becomes of the RST, so the count drops without a round trip.
func (s *server) abortFrom(t *testing.T, remote net.Addr) {
	t.Helper()
	s.mu.Lock()
	var c net.Conn
	for k := range s.open {
		if k.RemoteAddr().String() == remote.String() {
			c = k
			break
		}
	}
	s.mu.Unlock()
	if c == nil {
		t.Fatalf("server has no connection from %v", remote)
	}
	if err := c.(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatalf("set linger: %v", err)
	}
	s.drop(c)
}

func (s *server) accepted() (open, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open), s.total
}

func (s *server) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.open {
		c.Close()
	}
	s.open = map[net.Conn]bool{}
	s.mu.Unlock()
	s.wg.Wait()
}

// dial connects from the client namespace, failing after timeout.
func (tp *topo) dial(t *testing.T, ns netns.NsHandle, network string, to netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	t.Helper()
	var (
		c   net.Conn
		err error
	)
	tp.in(t, ns, func() {
		// The socket is created in ns by the dialler on this thread;
		// connecting is then waited for anywhere.
		d := net.Dialer{Timeout: timeout}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		c, err = d.DialContext(ctx, network, to.String())
	})
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func (tp *topo) mustDial(t *testing.T, network string, to netip.AddrPort) net.Conn {
	t.Helper()
	c, err := tp.dial(t, tp.client, network, to, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %v: %v", to, err)
	}
	return c
}

// abort closes c with a RST (SO_LINGER 0).
func abort(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatalf("set linger: %v", err)
	}
	c.Close()
}

// waitLimit bounds every wait of these tests: the events they wait for
// take milliseconds, so only a broken program, or a network that lost
// packets again and again, reaches it.
const waitLimit = 10 * time.Second

// waitFor polls cond until it holds, and fails the test if it still does
// not after waitLimit.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: still %s", what, state)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitCount waits until the program's count of port is want. On failure
// it reports what the count is made of (explainCount).
func waitCount(t *testing.T, l *Limiter, port uint16, want int64) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		c, err := l.Counts()
		if err != nil {
			t.Fatalf("counts: %v", err)
		}
		if c[port] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for count of port %d = %d: still count %d\n%s", port, want, c[port], explainCount(t, l, port))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// tcpStates names the states sock_diag reports.
var tcpStates = []string{1: "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
	"TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING"}

// explainCount lists the nonzero counters of l, its reservations and
// tracked sockets, and the TCP sockets of local port p in l's namespace.
func explainCount(t *testing.T, l *Limiter, p uint16) string {
	t.Helper()
	var b strings.Builder
	if cs, err := l.Counters(); err != nil {
		fmt.Fprintf(&b, "counters: %v\n", err)
	} else {
		b.WriteString("counters:")
		for _, name := range slices.Sorted(maps.Keys(cs)) {
			if cs[name] != 0 {
				fmt.Fprintf(&b, " %s=%d", name, cs[name])
			}
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "reservations %d, tracked sockets (cookie:port):", countEntries(t, l.objs.Pending))
	var (
		cookie uint64
		rec    connlimitClSock
	)
	it := l.objs.Socks.Iterate()
	for it.Next(&cookie, &rec) {
		fmt.Fprintf(&b, " %d:%d", cookie, rec.Port)
	}
	if err := it.Err(); err != nil {
		fmt.Fprintf(&b, " (%v)", err)
	}
	b.WriteString("\n")
	h, err := netlink.NewHandleAt(l.ns, unix.NETLINK_INET_DIAG)
	if err != nil {
		fmt.Fprintf(&b, "sock_diag: %v", err)
		return b.String()
	}
	defer h.Close()
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		socks, err := h.SocketDiagTCPInfo(fam)
		if err != nil {
			fmt.Fprintf(&b, "sock_diag: %v", err)
			return b.String()
		}
		for _, s := range socks {
			m := s.InetDiagMsg
			if m.ID.SourcePort != p {
				continue
			}
			state := fmt.Sprint(m.State)
			if int(m.State) < len(tcpStates) {
				state = tcpStates[m.State]
			}
			fmt.Fprintf(&b, "socket %v:%d <- %v:%d %s cookie %d", m.ID.Source, m.ID.SourcePort, m.ID.Destination, m.ID.DestinationPort, state, uint64(m.ID.Cookie[1])<<32|uint64(m.ID.Cookie[0]))
			if s.TCPInfo != nil {
				fmt.Fprintf(&b, " rto %dus retransmits %d backoff %d", s.TCPInfo.Rto, s.TCPInfo.Retransmits, s.TCPInfo.Backoff)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// refused reports whether err is a connection refused by a RST.
func refused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// defaultDial is the connect timeout of connections that must succeed.
const defaultDial = 5 * time.Second

func itoa(n int) string { return fmt.Sprint(n) }

// established counts the server namespace's sockets of local port p that
// are connected and not closing (ESTABLISHED or CLOSE_WAIT), and not over
// loopback, with sock_diag: an account of open connections independent of
// the program.
func (tp *topo) established(t *testing.T, p uint16) int {
	t.Helper()
	return tp.inStates(t, p, 1, 8)
}

// unclosed counts, like established, the sockets of local port p that have
// been established and have not reached TCP_CLOSE: ESTABLISHED, FIN_WAIT1,
// FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING. A socket the server closed
// stays in LAST_ACK until the client acknowledges its FIN, and counts.
func (tp *topo) unclosed(t *testing.T, p uint16) int {
	t.Helper()
	return tp.inStates(t, p, 1, 4, 5, 8, 9, 11)
}

func (tp *topo) inStates(t *testing.T, p uint16, states ...uint8) int {
	t.Helper()
	h, err := netlink.NewHandleAt(tp.server, unix.NETLINK_INET_DIAG)
	if err != nil {
		t.Fatalf("sock_diag handle: %v", err)
	}
	defer h.Close()
	n := 0
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		socks, err := h.SocketDiagTCP(fam)
		if err != nil {
			t.Fatalf("sock_diag dump: %v", err)
		}
		for _, s := range socks {
			if s.ID.SourcePort == p && slices.Contains(states, s.State) && !s.ID.Source.IsLoopback() {
				n++
			}
		}
	}
	return n
}

// requests counts the server namespace's request sockets (handshakes
// waiting for their final ACK) of local port p, with sock_diag.
func (tp *topo) requests(t *testing.T, p uint16) int {
	t.Helper()
	return tp.inStates(t, p, 3)
}

// runServer runs the limiter's XDP program on frame with BPF_PROG_RUN in
// the server namespace, whose sockets the program looks ACKs up among.
func (tp *topo) runServer(t *testing.T, l *Limiter, frame []byte) pkttest.Result {
	t.Helper()
	var res pkttest.Result
	tp.in(t, tp.server, func() { res = pkttest.Run(t, l.Program(), frame) })
	return res
}
