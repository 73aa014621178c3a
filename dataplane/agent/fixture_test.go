package agent

import (
	"net"
	"net/netip"
	"testing"

	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/internal/pkttest"
	"github.com/sluice-dp/sluice/internal/testenv"
)

// Addresses of the test topology (documentation and private ranges). They
// never leave BPF_PROG_RUN.
var (
	hostMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x10}
	vmMAC   = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x20}

	// The VM's addresses: the backend addresses the LB tunnels to, and the
	// application's address in transparent mode.
	backend4 = netip.MustParseAddr("10.1.0.5")
	backend6 = netip.MustParseAddr("fd00:1::5")
	// lbNode4/6 are the LB node's outer sources.
	lbNode4 = netip.MustParseAddr("10.0.0.2")
	lbNode6 = netip.MustParseAddr("fd00::2")

	vip4 = netip.MustParseAddr("192.0.2.10")
	vip6 = netip.MustParseAddr("2001:db8:f::10")
	// vipT4/6 are the transparent-mode VIPs.
	vipT4 = netip.MustParseAddr("192.0.2.20")
	vipT6 = netip.MustParseAddr("2001:db8:f::20")

	client4 = netip.MustParseAddrPort("198.51.100.7:40000")
	client6 = netip.MustParseAddrPort("[2001:db8:c::7]:40000")

	app4 = netip.MustParseAddrPort("10.1.0.5:8080")
	app6 = netip.MustParseAddrPort("[fd00:1::5]:8080")
)

// The VIPs every packet test installs.
var (
	localTCP4 = VIP{Addr: vip4, Port: 80, Proto: l4.TCP}
	localUDP4 = VIP{Addr: vip4, Port: 53, Proto: l4.UDP}
	localTCP6 = VIP{Addr: vip6, Port: 80, Proto: l4.TCP}
	localAll6 = VIP{Addr: vip6, Port: 0, Proto: l4.UDP}
	transTCP4 = VIP{Addr: vipT4, Port: 80, Proto: l4.TCP}
	transUDP4 = VIP{Addr: vipT4, Port: 53, Proto: l4.UDP}
	transTCP6 = VIP{Addr: vipT6, Port: 80, Proto: l4.TCP}
	transUDP6 = VIP{Addr: vipT6, Port: 53, Proto: l4.UDP}
)

// newAgent loads an agent with small maps, this backend's addresses and the
// test VIPs; it is closed when the test ends.
func newAgent(t testing.TB, cfg Config) *Agent {
	t.Helper()
	testenv.RequirePriv(t)
	a, err := Load(Options{ConnTableSize: 1024}, cfg)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	for _, addr := range []netip.Addr{backend4, backend6} {
		if err := a.AddBackendAddr(addr); err != nil {
			t.Fatalf("add backend address: %v", err)
		}
	}
	for _, v := range []VIP{localTCP4, localUDP4, localTCP6, localAll6} {
		if err := a.AddVIP(v, Local, netip.AddrPort{}); err != nil {
			t.Fatalf("add vip: %v", err)
		}
	}
	for _, v := range []VIP{transTCP4, transUDP4} {
		if err := a.AddVIP(v, Transparent, app4); err != nil {
			t.Fatalf("add vip: %v", err)
		}
	}
	for _, v := range []VIP{transTCP6, transUDP6} {
		if err := a.AddVIP(v, Transparent, app6); err != nil {
			t.Fatalf("add vip: %v", err)
		}
	}
	return a
}

// readCounters reads the counters, failing the test on error.
func readCounters(t testing.TB, a *Agent) Counters {
	t.Helper()
	c, err := a.Counters()
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
