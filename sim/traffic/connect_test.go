package traffic

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/sim/topo"
)

// tcpCounter is a listener inside a node that counts the connections it
// accepted and those whose client has closed them (EOF), independently of
// what the client side reports.
type tcpCounter struct {
	mu               sync.Mutex
	accepted, closed int
	changed          chan struct{}
}

func listenCounter(t *testing.T, node *topo.Node, addr netip.AddrPort) *tcpCounter {
	t.Helper()
	var l net.Listener
	if err := node.Do(func() error {
		var err error
		l, err = net.Listen("tcp", addr.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	c := &tcpCounter{changed: make(chan struct{}, 1)}
	var wg sync.WaitGroup
	var conns []net.Conn
	var connsMu sync.Mutex
	t.Cleanup(func() {
		l.Close()
		connsMu.Lock()
		for _, x := range conns {
			x.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			connsMu.Lock()
			conns = append(conns, conn)
			connsMu.Unlock()
			c.bump(func() { c.accepted++ })
			wg.Go(func() {
				io.Copy(io.Discard, conn)
				c.bump(func() { c.closed++ })
				conn.Close()
			})
		}
	})
	return c
}

func (c *tcpCounter) bump(f func()) {
	c.mu.Lock()
	f()
	c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// waitFor waits until the counts are (accepted, closed); the server
// learns of a connection a moment after the client does. It fails after
// a generous bound, which only a broken count reaches.
func (c *tcpCounter) waitFor(t *testing.T, accepted, closed int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		a, cl := c.accepted, c.closed
		c.mu.Unlock()
		if a == accepted && cl == closed {
			return
		}
		select {
		case <-c.changed:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("server accepted %d and saw %d closed, want %d and %d", a, cl, accepted, closed)
		}
	}
}

func TestConnectLoad(t *testing.T) {
	n := newNet3(t)
	for _, addr := range []netip.AddrPort{netip.AddrPortFrom(serverAddr4, 7100), netip.AddrPortFrom(serverAddr6, 7100)} {
		srv := listenCounter(t, n.server, addr)
		res, err := ConnectLoad(context.Background(), n.client, ConnectSpec{Dst: addr, Rate: 200, Duration: 500 * time.Millisecond, Timeout: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if res.Attempts != 100 || res.OK != 100 || res.Refused+res.Timeout+res.Failed != 0 || len(res.Latencies) != 100 {
			t.Errorf("%v: %+v, want 100 attempts, all ok", addr, res)
		}
		var sum, okSum int
		for i := range res.PerSecond {
			sum += res.PerSecond[i]
			okSum += res.OKPerSecond[i]
		}
		if sum != 100 || okSum != 100 {
			t.Errorf("%v: per second %v (ok %v), want 100 in all", addr, res.PerSecond, res.OKPerSecond)
		}
		// Every connection reached the server and was closed by the
		// client right after the handshake.
		srv.waitFor(t, 100, 100)
	}
}

func TestConnectLoadRefusedAndTimeout(t *testing.T) {
	n := newNet3(t)
	// Nothing listens on the port: the server's kernel answers each SYN
	// with a RST.
	refused := netip.AddrPortFrom(serverAddr4, 7101)
	res, err := ConnectLoad(context.Background(), n.client, ConnectSpec{Dst: refused, Rate: 100, Duration: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempts != 20 || res.Refused != 20 || res.OK+res.Timeout+res.Failed != 0 {
		t.Errorf("to a closed port: %+v, want 20 refused", res)
	}

	// An address the router sends to the server's MAC but that the
	// server does not own: the server drops each SYN without a word.
	silent := netip.MustParseAddr("10.100.2.99")
	if err := n.router.AddNeighbor(n.right.A.Iface, silent, n.right.B.MAC); err != nil {
		t.Fatal(err)
	}
	c := capture(t, n.server, n.right.B.Iface)
	dst := netip.AddrPortFrom(silent, 7102)
	res, err = ConnectLoad(context.Background(), n.client, ConnectSpec{Dst: dst, Rate: 50, Duration: 200 * time.Millisecond, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempts != 10 || res.Timeout != 10 || res.OK+res.Refused+res.Failed != 0 {
		t.Errorf("to a silent address: %+v, want 10 timeouts", res)
	}
	// Wait past the SYN retransmission time: a timed-out attempt must
	// not send its SYN again.
	time.Sleep(SYNRetransmit + 200*time.Millisecond)
	syns := tcpSYNs(t, stopCapture(t, c), 7102)
	if len(syns) != 10 || len(slices.Compact(slices.Sorted(slices.Values(syns)))) != 10 {
		t.Errorf("server saw %d SYNs (ports %v), want one from each of 10 ports", len(syns), syns)
	}
}

func TestHold(t *testing.T) {
	n := newNet3(t)
	addr := netip.AddrPortFrom(serverAddr6, 7200)
	srv := listenCounter(t, n.server, addr)
	h, res, err := Hold(context.Background(), n.client, addr, 3, 0)
	t.Cleanup(func() { h.CloseAll() })
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempts != 3 || res.OK != 3 || h.Open() != 3 {
		t.Errorf("hold 3: %+v, %d open; want 3 ok and open", res, h.Open())
	}
	srv.waitFor(t, 3, 0)
	if k, err := h.Close(1); k != 1 || err != nil {
		t.Errorf("Close(1) = %d, %v; want 1", k, err)
	}
	// Close returns once the server closed its end, which this server
	// does after counting the close: no waiting here.
	srv.mu.Lock()
	closed := srv.closed
	srv.mu.Unlock()
	if closed != 1 {
		t.Errorf("when Close(1) returned, the server had seen %d connections closed, want 1", closed)
	}
	if k, err := h.Close(5); k != 2 || err != nil || h.Open() != 0 {
		t.Errorf("Close(5) = %d, %v, %d left; want 2 closed, none left", k, err, h.Open())
	}
	srv.waitFor(t, 3, 3)

	h2, res, err := Hold(context.Background(), n.client, netip.AddrPortFrom(serverAddr6, 7201), 2, 0)
	t.Cleanup(func() { h2.CloseAll() })
	if err != nil {
		t.Fatal(err)
	}
	if res.Refused != 2 || h2.Open() != 0 {
		t.Errorf("hold to a closed port: %+v, %d open; want 2 refused", res, h2.Open())
	}
}

func TestConnectSpecErrors(t *testing.T) {
	dst := netip.MustParseAddrPort("10.0.0.1:80")
	for _, spec := range []ConnectSpec{
		{Dst: netip.AddrPort{}, Rate: 1, Duration: time.Second},
		{Dst: netip.MustParseAddrPort("10.0.0.1:0"), Rate: 1, Duration: time.Second},
		{Dst: dst, Rate: 0, Duration: time.Second},
		{Dst: dst, Rate: MaxConnectRate + 1, Duration: time.Second},
		{Dst: dst, Rate: 1, Duration: 0},
		{Dst: dst, Rate: 1, Duration: time.Second, Timeout: SYNRetransmit},
		{Dst: dst, Rate: 1, Duration: time.Second, Timeout: -time.Millisecond},
	} {
		// The node is never used: the spec is rejected first.
		if _, err := ConnectLoad(context.Background(), nil, spec); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%+v: err %v, want ErrInvalidSpec", spec, err)
		}
	}
	if _, _, err := Hold(context.Background(), &topo.Node{}, dst, 0, 0); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("hold of 0 connections: err %v, want ErrInvalidSpec", err)
	}
}

func TestNextWholeSecond(t *testing.T) {
	for _, d := range []time.Duration{0, 50 * time.Millisecond, 1500 * time.Millisecond} {
		before := time.Now()
		at, err := NextWholeSecond(d)
		if err != nil {
			t.Fatal(err)
		}
		// Read both clocks again, independently, and project the
		// monotonic clock to at.
		var ts unix.Timespec
		now := time.Now()
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			t.Fatal(err)
		}
		mono := time.Duration(ts.Nano()) + at.Sub(now)
		// The two readings are microseconds apart, not simultaneous.
		if off := mono % time.Second; off > time.Millisecond && off < time.Second-time.Millisecond {
			t.Errorf("d %v: the monotonic clock reads %v at the returned time, %v past a whole second", d, mono, off)
		}
		if at.Before(before.Add(d)) || at.After(now.Add(d+time.Second)) {
			t.Errorf("d %v: %v from now, want between d and d+1s", d, at.Sub(before))
		}
	}
}
