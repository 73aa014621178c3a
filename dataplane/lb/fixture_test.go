package lb

import (
	"net"
	"net/netip"
	"testing"

	"github.com/sluice-dp/sluice/internal/testenv"
)

// Addresses of the test topology. They never leave BPF_PROG_RUN.
var (
	nodeV4     = netip.MustParseAddr("10.0.0.2")
	nodeV6     = netip.MustParseAddr("fd00::2")
	nodeMAC    = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
	clientMAC  = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	gatewayMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0xfe}
)

func testConfig() Config {
	return Config{
		Seed:       0x5eed,
		SourceV4:   nodeV4,
		SourceV6:   nodeV6,
		GatewayMAC: gatewayMAC,
	}
}

// newLB loads a program with small maps; it is closed when the test ends.
func newLB(t testing.TB, opts Options) *LB {
	t.Helper()
	testenv.RequirePriv(t)
	if opts.ConnTableSize == 0 {
		opts.ConnTableSize = 1024
	}
	l, err := Load(opts, testConfig())
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// addVIP adds a VIP with backends, failing the test on error.
func addVIP(t testing.TB, l *LB, v VIP, o VIPOptions, backends ...Backend) {
	t.Helper()
	if err := l.AddVIP(v, o); err != nil {
		t.Fatalf("add vip: %v", err)
	}
	if len(backends) > 0 {
		if err := l.SetBackends(v, backends); err != nil {
			t.Fatalf("set backends: %v", err)
		}
	}
}

func be(addr string) Backend { return Backend{Addr: netip.MustParseAddr(addr), Weight: 1} }
