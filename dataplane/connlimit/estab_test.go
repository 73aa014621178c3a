package connlimit

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/sluice-dp/sluice/dataplane/internal/bpfenc"
	"github.com/sluice-dp/sluice/internal/pkttest"
)

// cachedFlows lists the cache of established flows as "client -> local"
// strings, the local port taken from the entry's value.
func cachedFlows(t *testing.T, l *Limiter) []string {
	t.Helper()
	var (
		f   connlimitClFlow
		v   connlimitClEstab
		out []string
	)
	it := l.objs.Estab.Iterate()
	for it.Next(&f, &v) {
		if f.Lport != 0 {
			t.Errorf("cached flow with local port %d in its key, want 0", bpfenc.Ntohs(f.Lport))
		}
		v4 := f.Family == 4
		out = append(out, fmt.Sprintf("%v -> %v",
			netip.AddrPortFrom(bpfenc.WordsAddr(f.Raddr, v4), bpfenc.Ntohs(f.Rport)),
			netip.AddrPortFrom(bpfenc.WordsAddr(f.Laddr, v4), bpfenc.Ntohs(v.Lport))))
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// connFlow is what the cache must hold for a connection the client
// namespace dialled: its client and server ends as the sockets see them.
func connFlow(c net.Conn) (client, server netip.AddrPort, s string) {
	client = c.LocalAddr().(*net.TCPAddr).AddrPort()
	server = c.RemoteAddr().(*net.TCPAddr).AddrPort()
	client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
	server = netip.AddrPortFrom(server.Addr().Unmap(), server.Port())
	return client, server, fmt.Sprintf("%v -> %v", client, server)
}

// TestEstablishedFlowCache follows a real connection: counted, its flow is
// cached and its segments with ACK pass on a cache hit (counter
// ack_established) without the handshake check; a segment from the same
// client end to another limited port is not a hit; closed, the flow leaves
// the cache; and a port no longer limited leaves no flow behind.
func TestEstablishedFlowCache(t *testing.T) {
	const other = port + 1
	for _, c := range listenCases {
		t.Run(c.name, func(t *testing.T) {
			tp := newTopo(t)
			l := tp.loadIn(t, map[uint16]Limit{port: {Max: 10}, other: {Max: 10}})
			if err := l.Start(); err != nil {
				t.Fatal(err)
			}
			tp.listen(t, c.network, c.listen)
			conn := tp.mustDial(t, "tcp", c.to)
			waitCount(t, l, port, 1)
			client, server, want := connFlow(conn)
			waitFor(t, "the connection's flow in the cache", func() (bool, string) {
				got := cachedFlows(t, l)
				return len(got) == 1 && got[0] == want, fmt.Sprintf("cache %q, want [%q]", got, want)
			})

			run := func(to netip.AddrPort) (pkttest.Verdict, map[string]uint64) {
				before := counters(t, l)
				res := tp.runServer(t, l, pkttest.TCP(pkttest.Flow{Src: client, Dst: to}, pkttest.ACK))
				after := counters(t, l)
				d := map[string]uint64{}
				for _, n := range []string{"ack_established", "ack_reserved", "drop_limit_ack", "pass"} {
					d[n] = after[n] - before[n]
				}
				return res.Verdict, d
			}
			if v, d := run(server); v != pkttest.XDPPass || d["ack_established"] != 1 || d["ack_reserved"] != 0 {
				t.Errorf("ACK of the connection: verdict %v, counters moved %v; want XDP_PASS, ack_established 1, ack_reserved 0", v, d)
			}
			if v, d := run(netip.AddrPortFrom(server.Addr(), other)); v != pkttest.XDPPass || d["ack_established"] != 0 {
				t.Errorf("ACK from the same client end to port %d: verdict %v, counters moved %v; want XDP_PASS, no cache hit", other, v, d)
			}

			conn.Close()
			waitCount(t, l, port, 0)
			waitFor(t, "the cache to empty after the close", func() (bool, string) {
				got := cachedFlows(t, l)
				return len(got) == 0, fmt.Sprintf("cache %q", got)
			})
			if _, d := run(server); d["ack_established"] != 0 {
				t.Errorf("ACK of the closed connection hit the cache: counters moved %v", d)
			}

			tp.mustDial(t, "tcp", c.to)
			waitFor(t, "the second connection's flow in the cache", func() (bool, string) {
				got := cachedFlows(t, l)
				return len(got) == 1, fmt.Sprintf("cache %q", got)
			})
			if err := l.SetPorts(map[uint16]Limit{other: {Max: 10}}); err != nil {
				t.Fatal(err)
			}
			if got := cachedFlows(t, l); len(got) != 0 {
				t.Errorf("cache %q after port %d stopped being limited, want empty", got, port)
			}
		})
	}
}

func counters(t *testing.T, l *Limiter) map[string]uint64 {
	t.Helper()
	c, err := l.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}
