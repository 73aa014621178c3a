package connlimit

import (
	"net/netip"
	"testing"

	"github.com/sluice-dp/sluice/dataplane/chain"
	"github.com/sluice-dp/sluice/dataplane/police"
	"github.com/sluice-dp/sluice/internal/pkttest"
	"github.com/sluice-dp/sluice/internal/testenv"
)

// TestChainMember runs two limiters as a chain. The second refuses every
// SYN to the port with a RST (its count is held at its limit), so a SYN
// the first lets through comes out as XDP_TX, and one the first refuses
// comes out dropped without reaching the second.
func TestChainMember(t *testing.T) {
	testenv.RequirePriv(t)
	c, err := chain.Load(chain.XDP, chain.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first := load(t, Options{ChainMaps: c.MemberMaps()})
	second := load(t, Options{ChainMaps: c.MemberMaps()})
	if err := first.SetPort(dropPort, 1, police.Drop); err != nil {
		t.Fatal(err)
	}
	if err := second.SetPort(dropPort, 1, police.RST); err != nil {
		t.Fatal(err)
	}
	if err := second.objs.Counts.Put(uint16(dropPort), int64(1)); err != nil {
		t.Fatal(err)
	}
	members := []chain.Member{{Name: "first", Program: first.Program()}, {Name: "second", Program: second.Program()}}
	if err := c.Set(members); err != nil {
		t.Fatalf("set chain: %v", err)
	}
	syn := pkttest.TCP(flow(client4, local4, dropPort), pkttest.SYN)
	ack := pkttest.TCP(flow(client4, local4, dropPort), pkttest.ACK)
	other := pkttest.TCP(flow(client4, netip.MustParseAddr("192.0.2.11"), freePort), pkttest.SYN)
	ns := newNS(t)
	tp := &topo{}
	for _, tc := range []struct {
		name  string
		count int64 // the first limiter's
		in    []byte
		want  pkttest.Verdict
		// the second limiter's counters that must move
		second map[string]uint64
	}{
		{"syn below limit goes on", 0, syn, pkttest.XDPTX, map[string]uint64{"tx_rst": 1}},
		{"syn at limit is refused", 1, syn, pkttest.XDPDrop, nil},
		{"ack goes on", 1, ack, pkttest.XDPPass, map[string]uint64{"pass": 1}},
		{"unlimited port goes on", 1, other, pkttest.XDPPass, map[string]uint64{"pass": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := first.objs.Counts.Put(uint16(dropPort), tc.count); err != nil {
				t.Fatal(err)
			}
			before, err := second.Counters()
			if err != nil {
				t.Fatal(err)
			}
			var res pkttest.Result
			tp.in(t, ns, func() { res = pkttest.Run(t, c.Program(), tc.in) })
			if res.Verdict != tc.want {
				t.Errorf("verdict %v, want %v", res.Verdict, tc.want)
			}
			after, err := second.Counters()
			if err != nil {
				t.Fatal(err)
			}
			pkttest.ExpectDeltas(t, before, after, tc.second)
		})
	}
}
