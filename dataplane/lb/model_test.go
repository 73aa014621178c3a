package lb

import (
	"net/netip"
	"testing"

	"github.com/sluice-dp/sluice/ctl/flowhash"
	"github.com/sluice-dp/sluice/ctl/maglev"
	"github.com/sluice-dp/sluice/internal/pkttest"
)

// This file is the tests' independent model of the program's choices: the
// flow hash from ctl/flowhash and the ring from ctl/maglev, computed from the
// wire format of docs/lb.md, never from the program's output.

// modelFlowHash is the 5-tuple hash of a client→VIP flow (ctl/flowhash).
func modelFlowHash(client, vip netip.AddrPort, seed uint64) uint32 {
	return flowhash.Tuple(client, vip, seed)
}

// modelSrcHash is the client-affinity hash of source-hash VIPs.
func modelSrcHash(client netip.Addr, seed uint64) uint32 {
	return flowhash.Source(client, seed)
}

// modelRing is a VIP's Maglev ring: its up backends in a table built by
// ctl/maglev with the program's size and seed.
type modelRing struct{ tab *maglev.Table }

func newModelRing(t testing.TB, backends []Backend, size uint32, seed uint64) modelRing {
	t.Helper()
	var up []maglev.Backend
	for _, b := range backends {
		if !b.Down {
			up = append(up, maglev.Backend{Addr: b.Addr, Weight: b.Weight})
		}
	}
	tab, err := maglev.New(up, size, seed)
	if err != nil {
		t.Fatalf("model maglev table of %v: %v", backends, err)
	}
	return modelRing{tab: tab}
}

func (r modelRing) pick(hash uint32) netip.Addr { return r.tab.Lookup(hash).Addr }

// readCounters reads the counters, failing the test on error.
func readCounters(t testing.TB, l *LB) Counters {
	t.Helper()
	c, err := l.Counters()
	if err != nil {
		t.Fatalf("read counters: %v", err)
	}
	return c
}

// checkStats checks the global counters' deltas (pkttest.ExpectDeltas).
func checkStats(t testing.TB, before, after Counters, want map[string]uint64) {
	t.Helper()
	pkttest.ExpectDeltas(t, before.Stats, after.Stats, want)
}
