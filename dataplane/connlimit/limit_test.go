package connlimit

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/sluice-dp/sluice/dataplane/attach"
	"github.com/sluice-dp/sluice/dataplane/police"
)

// refusedDial is the connect timeout of connections that must be refused.
// A dropped SYN is retransmitted after 1 s (the initial RTO), so within
// this timeout the client sends exactly one SYN.
const refusedDial = 500 * time.Millisecond

// TestExactLimit attaches the program on the server's interface with a
// limit of 3 and checks the sequence that defines the limit: three
// connections get in, the fourth is refused, closing one lets exactly one
// more in, and the next is refused again. The server's own account of its
// connections (accepted and still open, and sock_diag) never exceeds 3.
func TestExactLimit(t *testing.T) {
	for _, c := range []struct {
		name   string
		action police.Action
		to     netip.Addr
		mode   attach.Mode
	}{
		{"drop ipv4", police.Drop, serverV4, attach.Native},
		{"rst ipv4", police.RST, serverV4, attach.Native},
		{"drop ipv6", police.Drop, serverV6, attach.Native},
		{"rst ipv6", police.RST, serverV6, attach.Native},
		{"rst ipv4 generic", police.RST, serverV4, attach.Generic},
	} {
		t.Run(c.name, func(t *testing.T) {
			const max = 3
			tp := newTopo(t)
			l := tp.loadIn(t, map[uint16]Limit{port: {Max: max, Action: c.action}})
			tp.startAttached(t, l, c.mode)
			// Frames sent with XDP_TX (the RSTs) only arrive on a veth
			// whose peer runs an XDP program too: an unconfigured
			// limiter passes everything.
			tp.in(t, tp.client, func() {
				peer := load(t, Options{})
				at, err := peer.Attach(clientDev, c.mode)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { at.Close() })
			})
			srv := tp.listen(t, "tcp", netip.AddrPortFrom(netip.IPv6Unspecified(), port))
			to := netip.AddrPortFrom(c.to, port)
			atMost := func() {
				t.Helper()
				if open, _ := srv.accepted(); open > max {
					t.Fatalf("server has %d connections open, limit %d", open, max)
				}
				if n := tp.established(t, port); n > max {
					t.Fatalf("sock_diag shows %d established server sockets, limit %d", n, max)
				}
			}
			mustRefuse := func() {
				t.Helper()
				cn, err := tp.dial(t, tp.client, "tcp", to, refusedDial)
				if err == nil {
					cn.Close()
					t.Fatalf("connection %d was accepted over the limit", max+1)
				}
				if c.action == police.RST && !refused(err) {
					t.Fatalf("refused dial: %v, want connection refused", err)
				}
				if ne, ok := err.(net.Error); c.action == police.Drop && (!ok || !ne.Timeout()) {
					t.Fatalf("refused dial: %v, want a timeout", err)
				}
				atMost()
			}

			reservedBefore := counter(t, l, "ack_reserved")
			var conns []net.Conn
			for i := range max {
				conns = append(conns, tp.mustDial(t, "tcp", to))
				waitCount(t, l, port, int64(i+1))
				atMost()
			}
			before, err := l.Counters()
			if err != nil {
				t.Fatal(err)
			}
			mustRefuse()

			conns[0].Close()
			waitCount(t, l, port, max-1)
			tp.mustDial(t, "tcp", to)
			waitCount(t, l, port, max)
			atMost()
			mustRefuse()

			after, err := l.Counters()
			if err != nil {
				t.Fatal(err)
			}
			stat := "tx_rst"
			if c.action == police.Drop {
				stat = "drop_limit"
			}
			if d := after[stat] - before[stat]; d != 2 {
				t.Errorf("%s counted %d refused SYNs, want 2", stat, d)
			}
			if _, total := srv.accepted(); total != max+1 {
				t.Errorf("server accepted %d connections in all, want %d", total, max+1)
			}
			// Every handshake that got in held a reservation from its
			// final ACK until the kernel created the connection.
			if d := after["ack_reserved"] - reservedBefore; d != max+1 {
				t.Errorf("ack_reserved moved by %d, want %d", d, max+1)
			}
			if n := countEntries(t, l.objs.Pending); n != 0 {
				t.Errorf("%d reservations left, want 0", n)
			}
		})
	}
}
