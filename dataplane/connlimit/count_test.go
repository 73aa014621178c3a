package connlimit

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/sluice-dp/sluice/dataplane/internal/bpfenc"
	"github.com/sluice-dp/sluice/dataplane/police"
)

const port = 8080

// listenCases are the ways the server listens on port and the client
// reaches it.
var listenCases = []struct {
	name, network string
	listen, to    netip.AddrPort
}{
	{"ipv4", "tcp4", netip.AddrPortFrom(serverV4, port), netip.AddrPortFrom(serverV4, port)},
	{"ipv6", "tcp6", netip.AddrPortFrom(serverV6, port), netip.AddrPortFrom(serverV6, port)},
	// A dual-stack listener's IPv4 children are IPv6 sockets with
	// IPv4-mapped addresses.
	{"ipv4 on dual stack", "tcp", netip.AddrPortFrom(netip.IPv6Unspecified(), port), netip.AddrPortFrom(serverV4, port)},
}

// TestCountFollowsConnections opens real connections from the client
// namespace and closes them three ways; the count must follow the number
// of connections the test has open.
func TestCountFollowsConnections(t *testing.T) {
	for _, c := range listenCases {
		t.Run(c.name, func(t *testing.T) {
			tp := newTopo(t)
			l := tp.loadIn(t, map[uint16]Limit{port: {Max: 100}})
			if err := l.Start(); err != nil {
				t.Fatal(err)
			}
			// A limiter of another namespace counts none of these.
			var other *Limiter
			tp.in(t, tp.client, func() { other = load(t, Options{}) })
			if err := other.SetPort(port, 100, police.Drop); err != nil {
				t.Fatal(err)
			}
			if err := other.Start(); err != nil {
				t.Fatal(err)
			}
			srv := tp.listen(t, c.network, c.listen)

			var conns []net.Conn
			for i := range 3 {
				conns = append(conns, tp.mustDial(t, "tcp", c.to))
				waitCount(t, l, port, int64(i+1))
			}
			conns[0].Close() // client close, then the server closes its side
			waitCount(t, l, port, 2)
			if !srv.closeOne() { // server close first
				t.Fatal("server has no connection to close")
			}
			waitCount(t, l, port, 1)
			waitFor(t, "server to have one connection", func() (bool, string) {
				open, _ := srv.accepted()
				return open == 1, "open " + itoa(open)
			})
			for _, cn := range conns[1:] {
				abort(t, cn) // RST; the server's socket may be closed already
			}
			waitCount(t, l, port, 0)

			counters, err := l.Counters()
			if err != nil {
				t.Fatal(err)
			}
			if counters["conn_open"] != 3 || counters["conn_close"] != 3 {
				t.Errorf("conn_open %d conn_close %d, want 3 and 3", counters["conn_open"], counters["conn_close"])
			}
			if oc, err := other.Counts(); err != nil || oc[port] != 0 {
				t.Errorf("limiter of the client namespace counted %v (%v), want 0", oc[port], err)
			}
		})
	}
}

// TestLoopbackNotCounted connects over loopback inside the server
// namespace, then once from the client: only the latter counts.
func TestLoopbackNotCounted(t *testing.T) {
	tp := newTopo(t)
	l := tp.loadIn(t, map[uint16]Limit{port: {Max: 100}})
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	srv := tp.listen(t, "tcp", netip.AddrPortFrom(netip.IPv6Unspecified(), port))
	for _, a := range []string{"127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"} {
		to := netip.AddrPortFrom(netip.MustParseAddr(a), port)
		if _, err := tp.dial(t, tp.server, "tcp", to, defaultDial); err != nil {
			t.Fatalf("dial %v: %v", to, err)
		}
	}
	waitFor(t, "4 loopback connections accepted", func() (bool, string) {
		open, _ := srv.accepted()
		return open == 4, "open " + itoa(open)
	})
	tp.mustDial(t, "tcp", netip.AddrPortFrom(serverV4, port))
	waitCount(t, l, port, 1)
	counters, err := l.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if counters["conn_open"] != 1 {
		t.Errorf("conn_open = %d, want 1", counters["conn_open"])
	}
}

// TestSeed opens connections before Start: Start must count them and cache
// their flows, and their closing must uncount and forget them (which needs
// the cookie sock_diag reports to be the one the tracepoint reads).
func TestSeed(t *testing.T) {
	tp := newTopo(t)
	l := tp.loadIn(t, map[uint16]Limit{port: {Max: 100}})
	srv := tp.listen(t, "tcp", netip.AddrPortFrom(netip.IPv6Unspecified(), port))
	var conns []net.Conn
	for range 3 {
		conns = append(conns, tp.mustDial(t, "tcp", netip.AddrPortFrom(serverV4, port)))
	}
	for range 2 {
		conns = append(conns, tp.mustDial(t, "tcp", netip.AddrPortFrom(serverV6, port)))
	}
	if _, err := tp.dial(t, tp.server, "tcp", netip.MustParseAddrPort("127.0.0.1:8080"), defaultDial); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "6 connections accepted", func() (bool, string) {
		open, _ := srv.accepted()
		return open == 6, "open " + itoa(open)
	})
	if c, _ := l.Counts(); c[port] != 0 {
		t.Fatalf("count before Start = %d, want 0", c[port])
	}
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	if c, err := l.Counts(); err != nil || c[port] != int64(len(conns)) {
		t.Fatalf("count after Start = %d (%v), want %d", c[port], err, len(conns))
	}
	// The seed caches their flows, as the sockets see them.
	var want []string
	for _, c := range conns {
		_, _, f := connFlow(c)
		want = append(want, f)
	}
	slices.Sort(want)
	got := cachedFlows(t, l)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("cached flows after the seed:\n%q\nwant\n%q", got, want)
	}
	for i, c := range conns {
		c.Close()
		waitCount(t, l, port, int64(len(conns)-i-1))
	}
	waitFor(t, "the cache to empty", func() (bool, string) {
		got := cachedFlows(t, l)
		return len(got) == 0, fmt.Sprintf("cache %q", got)
	})
}

// TestSeedOnSetPort limits a port after Start: its open connections are
// counted then. Unlimiting it and limiting it again counts them afresh.
func TestSeedOnSetPort(t *testing.T) {
	tp := newTopo(t)
	l := tp.loadIn(t, map[uint16]Limit{})
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	tp.listen(t, "tcp", netip.AddrPortFrom(netip.IPv6Unspecified(), port))
	for range 2 {
		tp.mustDial(t, "tcp", netip.AddrPortFrom(serverV6, port))
	}
	c := tp.mustDial(t, "tcp", netip.AddrPortFrom(serverV4, port))
	// The last one is accepted before its count could be seeded only if
	// the server side is established: wait for it with sock_diag.
	waitFor(t, "3 established server sockets", func() (bool, string) {
		n := tp.established(t, port)
		return n == 3, "established " + itoa(n)
	})
	if err := l.SetPort(port, 10, police.RST); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.Counts(); got[port] != 3 {
		t.Fatalf("count after SetPort = %d, want 3", got[port])
	}
	if err := l.SetPorts(map[uint16]Limit{}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	waitFor(t, "2 unclosed server sockets", func() (bool, string) {
		n := tp.unclosed(t, port)
		return n == 2, "unclosed " + itoa(n)
	})
	if err := l.SetPort(port, 10, police.Drop); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.Counts(); got[port] != 2 {
		t.Fatalf("count after limiting again = %d, want 2", got[port])
	}
}

// TestSeedTombstone plays a socket that closes between the dump and its
// seed: the tracepoint left a tombstone and found no record to delete.
// cl_seed must then count nothing and cache nothing; a socket without a
// tombstone is counted and cached.
func TestSeedTombstone(t *testing.T) {
	l := load(t, Options{})
	if err := l.SetPort(port, 10, police.Drop); err != nil {
		t.Fatal(err)
	}
	flow := func(client string) connlimitClFlow {
		c := netip.MustParseAddrPort(client)
		return connlimitClFlow{
			Raddr: bpfenc.AddrWords(c.Addr()), Laddr: bpfenc.AddrWords(serverV4),
			Rport: bpfenc.Htons(c.Port()), Lport: bpfenc.Htons(port), Family: 4,
		}
	}
	seed := func(cookie uint64, f connlimitClFlow) connlimitClSeedResult {
		arg := connlimitClSeedArg{Cookie: cookie, Port: port, Flow: f}
		ret, err := l.objs.ClSeed.Run(&ebpf.RunOptions{Context: &arg})
		if err != nil {
			t.Fatal(err)
		}
		return connlimitClSeedResult(ret)
	}
	if err := l.objs.Tombs.Put(uint64(41), uint8(1)); err != nil {
		t.Fatal(err)
	}
	if r := seed(41, flow("10.77.0.60:40041")); r != connlimitClSeedResultCL_SEED_CLOSED {
		t.Errorf("seed of a closed socket = %v, want CL_SEED_CLOSED", r)
	}
	if got := cachedFlows(t, l); len(got) != 0 {
		t.Errorf("cache %q after seeding a closed socket, want empty", got)
	}
	if r := seed(42, flow("10.77.0.61:40042")); r != connlimitClSeedResultCL_SEED_COUNTED {
		t.Errorf("seed of an open socket = %v, want CL_SEED_COUNTED", r)
	}
	want := []string{fmt.Sprintf("10.77.0.61:40042 -> %v", netip.AddrPortFrom(serverV4, port))}
	if got := cachedFlows(t, l); !slices.Equal(got, want) {
		t.Errorf("cache %q after seeding an open socket, want %q", got, want)
	}
	if c, err := l.Counts(); err != nil || c[port] != 1 {
		t.Errorf("count %d (%v), want 1: only the open socket", c[port], err)
	}
}
