package lb

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/internal/pkttest"
	"github.com/sluice-dp/sluice/internal/testenv"
)

// Tests of the per-CPU connection table and of how flows react to backend
// changes. BPF_PROG_RUN runs the program on the calling CPU, and the
// connection table is per CPU, so every test here pins its goroutine with
// testenv.LockAnyCPU before its first packet and sends all packets from that
// goroutine (never from a t.Run subtest of a pinned test).
//
// The helpers prefixed conn are shared with icmp_test.go and api_test.go.

// connRingSize keeps the Go Maglev model cheap: the scenarios rebuild it
// many times. It is still far above 100 slots per backend.
const connRingSize = 4093

// connFamily is one address family of the test topology.
type connFamily struct {
	name    string
	vip     netip.Addr
	client  netip.Addr
	backend func(i int) netip.Addr
}

var connFamilies = []connFamily{
	{
		name:   "ipv4",
		vip:    netip.MustParseAddr("192.0.2.20"),
		client: netip.MustParseAddr("198.51.100.9"),
		backend: func(i int) netip.Addr {
			return netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)})
		},
	},
	{
		name:   "ipv6",
		vip:    netip.MustParseAddr("2001:db8:20::20"),
		client: netip.MustParseAddr("2001:db8:c0::9"),
		backend: func(i int) netip.Addr {
			return netip.AddrFrom16([16]byte{0xfd, 0, 0, 2, 14: byte(i >> 8), 15: byte(i)})
		},
	},
}

// backends returns n backends of weight 1, numbered from 1.
func (f connFamily) backends(n int) []Backend {
	out := make([]Backend, n)
	for i := range out {
		out[i] = Backend{Addr: f.backend(i + 1), Weight: 1}
	}
	return out
}

// connFlow is the client-side view of a flow as the test sends it: the MACs
// of the test topology, DF on IPv4 (as TCP stacks send it).
func connFlow(client, vip netip.AddrPort) pkttest.Flow {
	return pkttest.Flow{SrcMAC: clientMAC, DstMAC: nodeMAC, Src: client, Dst: vip, DF: client.Addr().Is4()}
}

// connMovingFlow finds, from port on, a client port of client whose flow
// the ring sends elsewhere once a few backends join base, and returns it
// with the grown set and both choices. The first choice stays in the set, so
// a flow pinned to it by the connection table can still be served. The
// search is over ports because Maglev keeps a flow on its backend through
// many additions when the slot is early in that backend's permutation.
func connMovingFlow(t testing.TB, fam connFamily, base []Backend, client netip.AddrPort, vip netip.AddrPort, size uint32, seed uint64) (netip.AddrPort, []Backend, netip.Addr, netip.Addr) {
	t.Helper()
	rings := []modelRing{newModelRing(t, base, size, seed)}
	sets := [][]Backend{base}
	for i := range 8 {
		grown := append(append([]Backend(nil), sets[i]...), Backend{Addr: fam.backend(200 + i), Weight: 1})
		sets = append(sets, grown)
		rings = append(rings, newModelRing(t, grown, size, seed))
	}
	for p := int(client.Port()); p < 65536; p++ {
		c := netip.AddrPortFrom(client.Addr(), uint16(p))
		h := modelFlowHash(c, vip, seed)
		first := rings[0].pick(h)
		for i := 1; i < len(rings); i++ {
			if moved := rings[i].pick(h); moved != first {
				return c, sets[i], first, moved
			}
		}
	}
	t.Fatalf("no port of %v moves when 8 backends join %v", client.Addr(), base)
	return netip.AddrPort{}, nil, netip.Addr{}, netip.Addr{}
}

// connStats reads the global counters.
func connStats(t testing.TB, l *LB) map[string]uint64 {
	t.Helper()
	c, err := l.Counters()
	if err != nil {
		t.Fatalf("read counters: %v", err)
	}
	return c.Stats
}

// connDeltas returns the counters that moved between two reads.
func connDeltas(before, after map[string]uint64) map[string]uint64 {
	d := make(map[string]uint64)
	for k, v := range after {
		if v != before[k] {
			d[k] = v - before[k]
		}
	}
	return d
}

// connCheckDeltas requires the counters that moved to be exactly want.
func connCheckDeltas(t testing.TB, what string, got, want map[string]uint64) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: counter %s moved by %d, want %d (all moves: %v)", what, k, got[k], v, got)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: counter %s moved by %d, want unchanged (all moves: %v)", what, k, v, got)
		}
	}
}

// connStatsOf builds an expected counter move: one of each name, repeated
// names adding up.
func connStatsOf(names ...string) map[string]uint64 {
	m := make(map[string]uint64)
	for _, n := range names {
		m[n]++
	}
	return m
}

// connBalanced is the counter move of one packet encapsulated in GUE, plus
// the connection-table counters it should move.
func connBalanced(conn ...string) map[string]uint64 {
	return connStatsOf(append([]string{"tx", "encap_gue"}, conn...)...)
}

// connRun runs one frame and returns the result and the counter moves.
func connRun(t testing.TB, l *LB, frame []byte) (pkttest.Result, map[string]uint64) {
	t.Helper()
	before := connStats(t, l)
	res := pkttest.Run(t, l.Program(), frame)
	return res, connDeltas(before, connStats(t, l))
}

// connGUE builds, independently of the program, the frame it must send for
// the packet in of flow f toward backend: GUE variant 1 from this node to
// the gateway, outer source port and IPv6 flow label from hash (always the
// 5-tuple hash of the flow, client side first), DF and TOS copied.
func connGUE(in []byte, f pkttest.Flow, backend netip.Addr, hash uint32) []byte {
	src := nodeV4
	outer := pkttest.Flow{
		SrcMAC: nodeMAC, DstMAC: gatewayMAC, VLAN: f.VLAN, TOS: f.TOS,
		DF: f.DF || f.Src.Addr().Is6(),
	}
	if backend.Is6() {
		src = nodeV6
		outer.FlowLabel = hash & 0xfffff
	}
	outer.Src = netip.AddrPortFrom(src, uint16(49152+hash&0x3fff))
	outer.Dst = netip.AddrPortFrom(backend, 6080)
	return pkttest.GUE(outer, pkttest.IPPacket(in))
}

// connExpectGUE checks a run that must have encapsulated in toward backend:
// verdict, the whole frame, and every checksum. step names the packet in
// failure messages, since a scenario sends many.
func connExpectGUE(t testing.TB, step string, res pkttest.Result, in []byte, f pkttest.Flow, backend netip.Addr, hash uint32) {
	t.Helper()
	if res.Verdict != pkttest.XDPTX {
		t.Errorf("%s: verdict %v, want %v", step, res.Verdict, pkttest.XDPTX)
		return
	}
	failed := t.Failed()
	pkttest.Expect(t, connGUE(in, f, backend, hash), res.Out)
	pkttest.VerifyChecksums(t, res.Packet)
	if !failed && t.Failed() {
		t.Errorf("%s: the frame above is wrong (want GUE to %v)", step, backend)
	}
}

// connTable reads the connection table of one CPU. The LB keeps its maps
// private; the test reaches the inner map through the outer array, which
// holds the id of each CPU's table.
func connTable(t testing.TB, l *LB, cpu int) map[lbFlowKey]lbFlowState {
	t.Helper()
	var id uint32
	if err := l.objs.Conns.Lookup(uint32(cpu), &id); err != nil {
		t.Fatalf("look up connection table of cpu %d: %v", cpu, err)
	}
	m, err := ebpf.NewMapFromID(ebpf.MapID(id))
	if err != nil {
		t.Fatalf("open connection table of cpu %d (map id %d): %v", cpu, id, err)
	}
	defer m.Close()
	out := make(map[lbFlowKey]lbFlowState)
	var k lbFlowKey
	var v lbFlowState
	it := m.Iterate()
	for it.Next(&k, &v) {
		out[k] = v
	}
	if err := it.Err(); err != nil {
		t.Fatalf("read connection table of cpu %d: %v", cpu, err)
	}
	return out
}

// connKeyClient decodes the client side of a connection-table key, which
// the C side stores in network byte order.
func connKeyClient(k lbFlowKey, v6 bool) netip.AddrPort {
	var b [16]byte
	for i, w := range k.Src {
		binary.NativeEndian.PutUint32(b[4*i:], w)
	}
	var port [2]byte
	binary.NativeEndian.PutUint16(port[:], k.Sport)
	a := netip.AddrFrom16(b)
	if !v6 {
		a = netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrPortFrom(a, binary.BigEndian.Uint16(port[:]))
}

// connClients lists the clients that have an entry in table.
func connClients(table map[lbFlowKey]lbFlowState, v6 bool) map[netip.AddrPort]bool {
	out := make(map[netip.AddrPort]bool, len(table))
	for k := range table {
		out[connKeyClient(k, v6)] = true
	}
	return out
}

// connStep is one step of a connection-table scenario: either a switch of
// the VIP to the grown backend set (see connMovingFlow) or one TCP
// segment of the scenario's flow, with the backend it must reach (the first
// ring's choice or, when moved, the grown ring's) and the connection-table
// counters it must move.
type connStep struct {
	grow  bool
	flags pkttest.TCPFlags
	moved bool
	conn  []string
}

func TestConnTable(t *testing.T) {
	syn := func(moved bool) connStep {
		return connStep{flags: pkttest.SYN, moved: moved, conn: []string{"conn_miss", "conn_miss_syn"}}
	}
	hit := func(flags pkttest.TCPFlags, moved bool) connStep {
		return connStep{flags: flags, moved: moved, conn: []string{"conn_hit"}}
	}
	miss := func(flags pkttest.TCPFlags, moved bool) connStep {
		return connStep{flags: flags, moved: moved, conn: []string{"conn_miss", "conn_miss_non_syn"}}
	}
	grow := connStep{grow: true}
	scenarios := []struct {
		name  string
		steps []connStep
	}{
		{"SYN takes the ring and inserts, ACK hits", []connStep{
			syn(false), hit(pkttest.ACK, false), hit(pkttest.ACK|pkttest.PSH, false),
		}},
		{"established flow keeps its backend when the ring moves it", []connStep{
			syn(false), hit(pkttest.ACK, false), grow, hit(pkttest.ACK, false), hit(pkttest.ACK|pkttest.FIN, false),
		}},
		{"SYN of a known flow re-hashes and rewrites the entry", []connStep{
			syn(false), grow, syn(true), hit(pkttest.ACK, true),
		}},
		{"RST of an unknown flow is balanced but not inserted", []connStep{
			miss(pkttest.RST, false), miss(pkttest.RST|pkttest.ACK, false), grow, miss(pkttest.ACK, true), hit(pkttest.ACK, true),
		}},
		{"mid-stream ACK of an unknown flow is inserted", []connStep{
			miss(pkttest.ACK, false), grow, hit(pkttest.ACK, false),
		}},
		{"RST of a known flow follows its entry", []connStep{
			syn(false), grow, hit(pkttest.RST|pkttest.ACK, false),
		}},
	}
	for _, fam := range connFamilies {
		for i, sc := range scenarios {
			t.Run(fam.name+"/"+sc.name, func(t *testing.T) {
				l := newLB(t, Options{RingSize: connRingSize})
				testenv.LockAnyCPU(t)
				seed := l.Config().Seed
				v := VIP{Addr: fam.vip, Port: 443, Proto: l4.TCP}
				base := fam.backends(2)
				addVIP(t, l, v, VIPOptions{}, base...)

				vipAP := netip.AddrPortFrom(v.Addr, v.Port)
				client, grown, first, moved := connMovingFlow(t, fam, base,
					netip.AddrPortFrom(fam.client, uint16(41000+100*i)), vipAP, l.Options().RingSize, seed)
				h := modelFlowHash(client, vipAP, seed)
				f := connFlow(client, vipAP)

				for n, s := range sc.steps {
					if s.grow {
						if err := l.SetBackends(v, grown); err != nil {
							t.Fatalf("step %d: grow the backend set: %v", n, err)
						}
						continue
					}
					step := fmt.Sprintf("step %d (%s)", n, connFlags(s.flags))
					want := first
					if s.moved {
						want = moved
					}
					in := pkttest.TCP(f, s.flags)
					res, d := connRun(t, l, in)
					connExpectGUE(t, step, res, in, f, want, h)
					connCheckDeltas(t, step, d, connBalanced(s.conn...))
				}
			})
		}
	}
}

// connFlags names TCP flags for step labels.
func connFlags(f pkttest.TCPFlags) string {
	names := []string{"FIN", "SYN", "RST", "PSH", "ACK"}
	s := ""
	for i, n := range names {
		if f&(1<<i) != 0 {
			if s != "" {
				s += "|"
			}
			s += n
		}
	}
	return s
}

func TestConnUDPIdle(t *testing.T) {
	// Long enough that a busy machine does not stretch a 1/4-idle gap
	// between two datagrams past the idle time.
	const idle = 500 * time.Millisecond
	for _, fam := range connFamilies {
		t.Run(fam.name, func(t *testing.T) {
			l := newLB(t, Options{RingSize: connRingSize})
			cfg := l.Config()
			cfg.UDPIdle = idle
			if err := l.SetConfig(cfg); err != nil {
				t.Fatalf("set udp idle: %v", err)
			}
			testenv.LockAnyCPU(t)
			// Not port 53: gopacket would decode the payload as DNS.
			v := VIP{Addr: fam.vip, Port: 7777, Proto: l4.UDP}
			base := fam.backends(2)
			addVIP(t, l, v, VIPOptions{}, base...)
			vipAP := netip.AddrPortFrom(v.Addr, v.Port)
			client, grown, first, moved := connMovingFlow(t, fam, base,
				netip.AddrPortFrom(fam.client, 33333), vipAP, l.Options().RingSize, cfg.Seed)
			h := modelFlowHash(client, vipAP, cfg.Seed)
			f := connFlow(client, vipAP)
			f.Payload = []byte("query")
			in := pkttest.UDP(f)

			send := func(step string, want netip.Addr, conn ...string) {
				t.Helper()
				res, d := connRun(t, l, in)
				connExpectGUE(t, step, res, in, f, want, h)
				connCheckDeltas(t, step, d, connBalanced(conn...))
			}
			send("first datagram", first, "conn_miss", "conn_miss_non_syn")
			if err := l.SetBackends(v, grown); err != nil {
				t.Fatalf("grow the backend set: %v", err)
			}
			send("datagram within the idle time", first, "conn_hit")
			// Each hit refreshes the entry: traffic more frequent than the
			// idle time keeps the flow on its backend well past one idle
			// period in all (the coarse clock ticks every few ms).
			for i := range 6 {
				time.Sleep(idle / 4)
				send(fmt.Sprintf("datagram %d of a steady stream", i), first, "conn_hit")
			}
			time.Sleep(3 * idle)
			send("datagram after the idle time", moved, "conn_udp_expired", "conn_miss", "conn_miss_non_syn")
			send("datagram after the re-hash", moved, "conn_hit")
		})
	}
}

func TestConnTableFull(t *testing.T) {
	const size, flows = 16, 200
	fam := connFamilies[0]
	l := newLB(t, Options{RingSize: connRingSize, ConnTableSize: size})
	cpu := testenv.LockAnyCPU(t)
	seed := l.Config().Seed
	v := VIP{Addr: fam.vip, Port: 80, Proto: l4.TCP}
	bs := fam.backends(3)
	addVIP(t, l, v, VIPOptions{}, bs...)
	ring := newModelRing(t, bs, l.Options().RingSize, seed)
	vipAP := netip.AddrPortFrom(v.Addr, v.Port)
	client := func(i int) netip.AddrPort { return netip.AddrPortFrom(fam.client, uint16(20000+i)) }

	before := connStats(t, l)
	for i := range flows {
		f := connFlow(client(i), vipAP)
		in := pkttest.TCP(f, pkttest.SYN)
		res := pkttest.Run(t, l.Program(), in)
		h := modelFlowHash(client(i), vipAP, seed)
		connExpectGUE(t, fmt.Sprintf("SYN of flow %d", i), res, in, f, ring.pick(h), h)
	}
	connCheckDeltas(t, "200 SYNs into a table of 16", connDeltas(before, connStats(t, l)), map[string]uint64{
		"tx": flows, "encap_gue": flows, "conn_miss": flows, "conn_miss_syn": flows,
	})

	table := connTable(t, l, cpu)
	if len(table) == 0 || len(table) > size {
		t.Fatalf("cpu %d's table holds %d entries, want 1..%d", cpu, len(table), size)
	}
	present := connClients(table, false)
	for c := range present {
		if c.Addr() != fam.client || c.Port() < 20000 || c.Port() >= 20000+flows {
			t.Errorf("table holds an entry for %v, which sent nothing", c)
		}
	}
	last := client(flows - 1)
	if !present[last] {
		t.Fatalf("the newest flow %v was evicted (table holds %v)", last, present)
	}

	// The newest flow still hits: a full table keeps working.
	f := connFlow(last, vipAP)
	in := pkttest.TCP(f, pkttest.ACK)
	res, d := connRun(t, l, in)
	h := modelFlowHash(last, vipAP, seed)
	connExpectGUE(t, "ACK of the newest flow", res, in, f, ring.pick(h), h)
	connCheckDeltas(t, "ACK of the newest flow", d, connBalanced("conn_hit"))

	// The oldest flows were evicted: their ACKs miss, and still reach the
	// ring's choice, which is the backend their SYN went to.
	for i := range 10 {
		if present[client(i)] {
			t.Errorf("flow %d (%v) survived 190 newer insertions into a table of %d", i, client(i), size)
			continue
		}
		f := connFlow(client(i), vipAP)
		in := pkttest.TCP(f, pkttest.ACK)
		res, d := connRun(t, l, in)
		h := modelFlowHash(client(i), vipAP, seed)
		step := fmt.Sprintf("ACK of evicted flow %d", i)
		connExpectGUE(t, step, res, in, f, ring.pick(h), h)
		connCheckDeltas(t, step, d, connBalanced("conn_miss", "conn_miss_non_syn"))
	}
	if n := len(connTable(t, l, cpu)); n > size {
		t.Errorf("after the misses cpu %d's table holds %d entries, more than %d", cpu, n, size)
	}
}

// connRemovalFlows picks, by computation only, client ports of three kinds
// for a change of the backend set from all to rest: flows on the backend
// that goes (gone), flows on a surviving backend that the new ring would
// send elsewhere (moved), and flows whose ring choice does not change
// (kept). Each kind gets n flows, so that every behaviour is exercised.
func connRemovalFlows(t testing.TB, fam connFamily, vip netip.AddrPort, gone netip.Addr, before, after modelRing, seed uint64, n int) (goneFlows, movedFlows, keptFlows []netip.AddrPort) {
	t.Helper()
	for p := 30000; p < 65535 && (len(goneFlows) < n || len(movedFlows) < n || len(keptFlows) < n); p++ {
		c := netip.AddrPortFrom(fam.client, uint16(p))
		h := modelFlowHash(c, vip, seed)
		b, a := before.pick(h), after.pick(h)
		switch {
		case b == gone:
			if len(goneFlows) < n {
				goneFlows = append(goneFlows, c)
			}
		case a != b:
			if len(movedFlows) < n {
				movedFlows = append(movedFlows, c)
			}
		default:
			if len(keptFlows) < n {
				keptFlows = append(keptFlows, c)
			}
		}
	}
	if len(goneFlows) < n || len(movedFlows) < n || len(keptFlows) < n {
		t.Fatalf("found only %d/%d/%d flows of each kind", len(goneFlows), len(movedFlows), len(keptFlows))
	}
	return goneFlows, movedFlows, keptFlows
}

func TestConnBackendChange(t *testing.T) {
	fam := connFamilies[0]
	all := fam.backends(5)
	gone := all[2]
	rest := append(append([]Backend(nil), all[:2]...), all[3:]...)
	down := append([]Backend(nil), all...)
	down[2].Down = true
	replacement := Backend{Addr: fam.backend(99), Weight: 1}

	cases := []struct {
		name string
		// final is the set the flows see when their ACKs arrive.
		final []Backend
		// change moves the VIP from all to final.
		change func(t *testing.T, l *LB, v VIP)
	}{
		{
			name:  "backend removed",
			final: rest,
			change: func(t *testing.T, l *LB, v VIP) {
				if err := l.SetBackends(v, rest); err != nil {
					t.Fatalf("remove %v: %v", gone.Addr, err)
				}
			},
		},
		{
			name:  "backend marked down",
			final: down,
			change: func(t *testing.T, l *LB, v VIP) {
				if err := l.SetBackends(v, down); err != nil {
					t.Fatalf("mark %v down: %v", gone.Addr, err)
				}
			},
		},
		{
			// The removed backend's slot goes to a new backend: entries
			// made for the old one must not send its flows to the new one.
			name:  "backend removed and its slot reused by another",
			final: append(append([]Backend(nil), rest...), replacement),
			change: func(t *testing.T, l *LB, v VIP) {
				oldID := l.vips[v].backends[gone.Addr].id
				if err := l.SetBackends(v, rest); err != nil {
					t.Fatalf("remove %v: %v", gone.Addr, err)
				}
				if err := l.SetBackends(v, append(append([]Backend(nil), rest...), replacement)); err != nil {
					t.Fatalf("add %v: %v", replacement.Addr, err)
				}
				if id := l.vips[v].backends[replacement.Addr].id; id != oldID {
					t.Fatalf("replacement got backend id %d, not the removed one's %d: the case tests nothing", id, oldID)
				}
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newLB(t, Options{RingSize: connRingSize})
			testenv.LockAnyCPU(t)
			seed := l.Config().Seed
			size := l.Options().RingSize
			v := VIP{Addr: fam.vip, Port: 80, Proto: l4.TCP}
			addVIP(t, l, v, VIPOptions{}, all...)
			vipAP := netip.AddrPortFrom(v.Addr, v.Port)
			before := newModelRing(t, all, size, seed)
			after := newModelRing(t, c.final, size, seed)
			goneFlows, movedFlows, keptFlows := connRemovalFlows(t, fam, vipAP, gone.Addr, before, after, seed, 3)

			send := func(step string, client netip.AddrPort, flags pkttest.TCPFlags, want netip.Addr, conn ...string) {
				t.Helper()
				f := connFlow(client, vipAP)
				in := pkttest.TCP(f, flags)
				res, d := connRun(t, l, in)
				connExpectGUE(t, step, res, in, f, want, modelFlowHash(client, vipAP, seed))
				connCheckDeltas(t, step, d, connBalanced(conn...))
			}
			every := append(append(append([]netip.AddrPort(nil), goneFlows...), movedFlows...), keptFlows...)
			for _, cl := range every {
				send("SYN of "+cl.String(), cl, pkttest.SYN, before.pick(modelFlowHash(cl, vipAP, seed)), "conn_miss", "conn_miss_syn")
			}
			c.change(t, l, v)
			for _, cl := range append(movedFlows, keptFlows...) {
				send("ACK of surviving "+cl.String(), cl, pkttest.ACK, before.pick(modelFlowHash(cl, vipAP, seed)), "conn_hit")
			}
			for _, cl := range goneFlows {
				want := after.pick(modelFlowHash(cl, vipAP, seed))
				if want == gone.Addr {
					t.Fatalf("model sends %v to the backend that is gone", cl)
				}
				send("ACK of stale "+cl.String(), cl, pkttest.ACK, want, "conn_stale", "conn_miss", "conn_miss_non_syn")
				send("second ACK of re-hashed "+cl.String(), cl, pkttest.ACK, want, "conn_hit")
			}
		})
	}
}

func TestConnBackendBackUp(t *testing.T) {
	fam := connFamilies[0]
	all := fam.backends(4)
	down := append([]Backend(nil), all...)
	down[1].Down = true
	l := newLB(t, Options{RingSize: connRingSize})
	testenv.LockAnyCPU(t)
	seed := l.Config().Seed
	size := l.Options().RingSize
	v := VIP{Addr: fam.vip, Port: 80, Proto: l4.TCP}
	addVIP(t, l, v, VIPOptions{}, down...)
	vipAP := netip.AddrPortFrom(v.Addr, v.Port)
	upRing, downRing := newModelRing(t, all, size, seed), newModelRing(t, down, size, seed)

	// A flow that the full ring sends to the backend that is down: while
	// it is down the flow goes elsewhere, and its entry keeps it there.
	var rehashed, fresh netip.AddrPort
	for p := 10000; p < 60000 && (!rehashed.IsValid() || !fresh.IsValid()); p++ {
		c := netip.AddrPortFrom(fam.client, uint16(p))
		if upRing.pick(modelFlowHash(c, vipAP, seed)) != all[1].Addr {
			continue
		}
		if !rehashed.IsValid() {
			rehashed = c
		} else {
			fresh = c
		}
	}
	send := func(step string, client netip.AddrPort, flags pkttest.TCPFlags, want netip.Addr, conn ...string) {
		t.Helper()
		f := connFlow(client, vipAP)
		in := pkttest.TCP(f, flags)
		res, d := connRun(t, l, in)
		connExpectGUE(t, step, res, in, f, want, modelFlowHash(client, vipAP, seed))
		connCheckDeltas(t, step, d, connBalanced(conn...))
	}
	elsewhere := downRing.pick(modelFlowHash(rehashed, vipAP, seed))
	if elsewhere == all[1].Addr {
		t.Fatalf("model sends a flow to a backend that is down")
	}
	send("SYN while the backend is down", rehashed, pkttest.SYN, elsewhere, "conn_miss", "conn_miss_syn")
	if err := l.SetBackends(v, all); err != nil {
		t.Fatalf("bring %v up: %v", all[1].Addr, err)
	}
	send("new SYN once the backend is up", fresh, pkttest.SYN, all[1].Addr, "conn_miss", "conn_miss_syn")
	send("ACK of the flow balanced while it was down", rehashed, pkttest.ACK, elsewhere, "conn_hit")
}

func TestConnStatelessVIP(t *testing.T) {
	for _, fam := range connFamilies {
		t.Run(fam.name, func(t *testing.T) {
			l := newLB(t, Options{RingSize: connRingSize})
			cpu := testenv.LockAnyCPU(t)
			seed := l.Config().Seed
			v := VIP{Addr: fam.vip, Port: 8080, Proto: l4.TCP}
			base := fam.backends(3)
			addVIP(t, l, v, VIPOptions{Stateless: true}, base...)
			vipAP := netip.AddrPortFrom(v.Addr, v.Port)
			client, grown, first, moved := connMovingFlow(t, fam, base,
				netip.AddrPortFrom(fam.client, 43210), vipAP, l.Options().RingSize, seed)
			h := modelFlowHash(client, vipAP, seed)
			f := connFlow(client, vipAP)

			steps := []struct {
				name  string
				grow  bool
				flags pkttest.TCPFlags
				want  netip.Addr
			}{
				{name: "SYN", flags: pkttest.SYN, want: first},
				{name: "ACK", flags: pkttest.ACK, want: first},
				{name: "grow", grow: true},
				// No entry holds the flow: it follows the new ring.
				{name: "ACK after the ring moved the flow", flags: pkttest.ACK, want: moved},
				{name: "SYN after the ring moved the flow", flags: pkttest.SYN, want: moved},
			}
			for _, s := range steps {
				if s.grow {
					if err := l.SetBackends(v, grown); err != nil {
						t.Fatalf("grow the backend set: %v", err)
					}
					continue
				}
				in := pkttest.TCP(f, s.flags)
				res, d := connRun(t, l, in)
				connExpectGUE(t, s.name, res, in, f, s.want, h)
				connCheckDeltas(t, s.name, d, connBalanced())
			}
			if n := len(connTable(t, l, cpu)); n != 0 {
				t.Errorf("stateless VIP left %d connection-table entries", n)
			}
		})
	}
}

func TestConnSourceHash(t *testing.T) {
	for _, fam := range connFamilies {
		t.Run(fam.name, func(t *testing.T) {
			l := newLB(t, Options{RingSize: connRingSize})
			testenv.LockAnyCPU(t)
			seed := l.Config().Seed
			v := VIP{Addr: fam.vip, Port: 443, Proto: l4.TCP}
			bs := fam.backends(4)
			addVIP(t, l, v, VIPOptions{SourceHash: true}, bs...)
			ring := newModelRing(t, bs, l.Options().RingSize, seed)
			vipAP := netip.AddrPortFrom(v.Addr, v.Port)

			used := make(map[netip.Addr]bool)
			portsDisagree := 0
			for i := range 40 {
				// Clients differ in their last address bytes.
				b := fam.client.As16()
				b[14], b[15] = byte(i), byte(i*7+1)
				addr := netip.AddrFrom16(b)
				if fam.client.Is4() {
					addr = netip.AddrFrom4([4]byte(b[12:]))
				}
				want := ring.pick(modelSrcHash(addr, seed))
				used[want] = true
				ports := []uint16{1111, 52222}
				if ring.pick(modelFlowHash(netip.AddrPortFrom(addr, ports[0]), vipAP, seed)) !=
					ring.pick(modelFlowHash(netip.AddrPortFrom(addr, ports[1]), vipAP, seed)) {
					portsDisagree++
				}
				for _, p := range ports {
					client := netip.AddrPortFrom(addr, p)
					f := connFlow(client, vipAP)
					in := pkttest.TCP(f, pkttest.SYN)
					res, d := connRun(t, l, in)
					step := fmt.Sprintf("SYN of %v", client)
					// The backend follows the source hash; the outer source
					// port and flow label still follow the 5-tuple hash.
					connExpectGUE(t, step, res, in, f, want, modelFlowHash(client, vipAP, seed))
					connCheckDeltas(t, step, d, connBalanced("conn_miss", "conn_miss_syn"))
				}
			}
			// Guards on the test itself: with one backend for everyone, or
			// ports that never split clients under the 5-tuple hash, the
			// checks above would not tell source hashing apart.
			if len(used) < 2 {
				t.Errorf("40 clients reach only %d backend(s)", len(used))
			}
			if portsDisagree == 0 {
				t.Errorf("the 5-tuple hash would put both ports of every client on one backend")
			}
		})
	}
}

func TestConnVIPReAdded(t *testing.T) {
	// A VIP removed and added again gets the same id, and its new backends
	// the ids of the old ones: the entries left by the first incarnation
	// must be recognised as stale, not followed to whoever holds those ids.
	fam := connFamilies[0]
	l := newLB(t, Options{RingSize: connRingSize})
	testenv.LockAnyCPU(t)
	seed := l.Config().Seed
	v := VIP{Addr: fam.vip, Port: 80, Proto: l4.TCP}
	before := fam.backends(2)
	after := []Backend{{Addr: fam.backend(50), Weight: 1}, {Addr: fam.backend(51), Weight: 1}}
	addVIP(t, l, v, VIPOptions{}, before...)
	oldID := l.vips[v].id
	oldReals := map[uint32]bool{}
	for _, r := range l.vips[v].backends {
		oldReals[r.id] = true
	}
	vipAP := netip.AddrPortFrom(v.Addr, v.Port)
	ringBefore := newModelRing(t, before, l.Options().RingSize, seed)
	ringAfter := newModelRing(t, after, l.Options().RingSize, seed)

	clients := make([]netip.AddrPort, 6)
	for i := range clients {
		clients[i] = netip.AddrPortFrom(fam.client, uint16(45000+i))
	}
	send := func(step string, client netip.AddrPort, flags pkttest.TCPFlags, want netip.Addr, conn ...string) {
		t.Helper()
		f := connFlow(client, vipAP)
		in := pkttest.TCP(f, flags)
		res, d := connRun(t, l, in)
		connExpectGUE(t, step, res, in, f, want, modelFlowHash(client, vipAP, seed))
		connCheckDeltas(t, step, d, connBalanced(conn...))
	}
	for _, c := range clients {
		send("SYN of "+c.String(), c, pkttest.SYN, ringBefore.pick(modelFlowHash(c, vipAP, seed)), "conn_miss", "conn_miss_syn")
	}
	if err := l.RemoveVIP(v); err != nil {
		t.Fatalf("remove: %v", err)
	}
	addVIP(t, l, v, VIPOptions{}, after...)
	if l.vips[v].id != oldID {
		t.Fatalf("re-added VIP got id %d, not %d: the case tests nothing", l.vips[v].id, oldID)
	}
	for _, r := range l.vips[v].backends {
		if !oldReals[r.id] {
			t.Fatalf("new backend %v got id %d, not one of the old ids %v: the case tests nothing", r.backend.Addr, r.id, oldReals)
		}
	}
	for _, c := range clients {
		want := ringAfter.pick(modelFlowHash(c, vipAP, seed))
		send("ACK of "+c.String(), c, pkttest.ACK, want, "conn_stale", "conn_miss", "conn_miss_non_syn")
		send("second ACK of "+c.String(), c, pkttest.ACK, want, "conn_hit")
	}
}
