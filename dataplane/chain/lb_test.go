package chain

import (
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/dataplane/lb"
	"github.com/sluice-dp/sluice/internal/pkttest"
)

// TestLBLast runs the real load balancer as the last member, behind a test
// member: a VIP packet must come out exactly as from the LB run alone (the
// independent path), GUE-encapsulated toward the backend the LB's own
// Lookup names, and the member in front must have seen it. A non-VIP packet
// passes untouched. The LB does not continue the chain, so a member after it
// never runs.
func TestLBLast(t *testing.T) {
	c := newChain(t, XDP)
	m := loadMembers(t, XDP, c)
	node := netip.MustParseAddr("10.0.0.2")
	l, err := lb.Load(lb.Options{ConnTableSize: 1024}, lb.Config{
		Seed:       0x5eed,
		SourceV4:   node,
		GatewayMAC: net.HardwareAddr{2, 0, 0, 0, 0, 0xfe},
	})
	if err != nil {
		t.Fatalf("load lb: %v", err)
	}
	defer l.Close()
	vip := lb.VIP{Addr: netip.MustParseAddr("192.0.2.10"), Port: 80, Proto: l4.TCP}
	if err := l.AddVIP(vip, lb.VIPOptions{Stateless: true}); err != nil {
		t.Fatalf("add vip: %v", err)
	}
	backends := []lb.Backend{
		{Addr: netip.MustParseAddr("10.1.0.1"), Weight: 1},
		{Addr: netip.MustParseAddr("10.1.0.2"), Weight: 1},
	}
	if err := l.SetBackends(vip, backends); err != nil {
		t.Fatalf("set backends: %v", err)
	}
	client := netip.MustParseAddrPort("198.51.100.7:40000")
	toVIP := pkttest.TCP(pkttest.Flow{Src: client, Dst: netip.AddrPortFrom(vip.Addr, 80)}, pkttest.SYN)
	notVIP := pkttest.TCP(pkttest.Flow{Src: client, Dst: netip.MustParseAddrPort("192.0.2.99:80")}, pkttest.SYN)

	alone := pkttest.Run(t, l.Program(), toVIP)
	if alone.Verdict != pkttest.XDPTX {
		t.Fatalf("lb alone: verdict %v, want XDP_TX", alone.Verdict)
	}

	if err := c.Set([]Member{{Name: "m0", Program: m.progs["m0"]}, {Name: "lb", Program: l.Program()}}); err != nil {
		t.Fatalf("set chain: %v", err)
	}
	seenBefore := m.seenTotals(t)
	r := pkttest.Run(t, c.Program(), toVIP)
	if r.Verdict != pkttest.XDPTX {
		t.Errorf("chain: verdict %v, want XDP_TX", r.Verdict)
	}
	pkttest.Expect(t, alone.Out, r.Out)
	backend, err := l.Lookup(vip, client)
	if err != nil {
		t.Fatalf("lookup: %v", err)
	}
	outer, ok := r.Packet.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if !ok || netip.AddrFrom4([4]byte(outer.DstIP.To4())) != backend || netip.AddrFrom4([4]byte(outer.SrcIP.To4())) != node {
		t.Errorf("outer IPv4 %v, want %v -> %v", outer, node, backend)
	}
	inner, err := pkttest.InnerPacket(r.Packet, pkttest.DefaultGUEPort)
	if err != nil {
		t.Fatalf("decode inner packet: %v", err)
	}
	if got, want := inner.Data(), pkttest.IPPacket(toVIP); string(got) != string(want) {
		t.Errorf("inner packet differs from the client's:\n got % x\nwant % x", got, want)
	}

	r = pkttest.Run(t, c.Program(), notVIP)
	if r.Verdict != pkttest.XDPPass {
		t.Errorf("non-vip packet: verdict %v, want XDP_PASS", r.Verdict)
	}
	pkttest.Expect(t, notVIP, r.Out)
	expectSeen(t, seenBefore, m.seenTotals(t), map[int]uint64{0: 2})

	if err := c.Set([]Member{{Name: "lb", Program: l.Program()}, {Name: "m0", Program: m.progs["m0"]}}); err != nil {
		t.Fatalf("set chain: %v", err)
	}
	seenBefore = m.seenTotals(t)
	r = pkttest.Run(t, c.Program(), toVIP)
	if r.Verdict != pkttest.XDPTX {
		t.Errorf("lb first: verdict %v, want XDP_TX", r.Verdict)
	}
	pkttest.Expect(t, alone.Out, r.Out)
	expectSeen(t, seenBefore, m.seenTotals(t), map[int]uint64{})
}
