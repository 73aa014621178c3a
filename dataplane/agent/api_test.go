package agent

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/internal/pkttest"
	"github.com/sluice-dp/sluice/internal/testenv"
)

func TestLoadRejects(t *testing.T) {
	testenv.RequirePriv(t)
	for _, c := range []struct {
		name string
		opts Options
		cfg  Config
	}{
		{name: "tiny table", opts: Options{ConnTableSize: 8}},
		{name: "negative tcp idle", cfg: Config{TCPIdle: -time.Second}},
		{name: "negative tcp closing", cfg: Config{TCPClosing: -time.Second}},
		{name: "negative udp idle", cfg: Config{UDPIdle: -time.Second}},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, err := Load(c.opts, c.cfg)
			if err == nil {
				a.Close()
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("load: %v, want ErrInvalid", err)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	a := newAgent(t, Config{})
	want := Config{GUEPort: 6080, TCPIdle: 2 * time.Hour, TCPClosing: 2 * time.Minute, UDPIdle: 30 * time.Second}
	if got := a.Config(); got != want {
		t.Errorf("config %+v, want %+v", got, want)
	}
	if got := a.Options(); got != (Options{ConnTableSize: 1024, MaxVIPs: 512, MaxBackendAddrs: 64}) {
		t.Errorf("options %+v", got)
	}
}

func TestVIPValidation(t *testing.T) {
	a := newAgent(t, Config{})
	v4 := VIP{Addr: netip.MustParseAddr("192.0.2.50"), Port: 80, Proto: l4.TCP}
	for _, c := range []struct {
		name string
		vip  VIP
		mode Mode
		app  netip.AddrPort
		want error
	}{
		{name: "no address", vip: VIP{Port: 80, Proto: l4.TCP}, mode: Local, want: ErrInvalid},
		{name: "mapped address", vip: VIP{Addr: netip.MustParseAddr("::ffff:192.0.2.1"), Proto: l4.TCP}, mode: Local, want: ErrInvalid},
		{name: "bad protocol", vip: VIP{Addr: v4.Addr, Port: 80, Proto: 1}, mode: Local, want: ErrInvalid},
		{name: "bad mode", vip: v4, mode: 9, want: ErrInvalid},
		{name: "local with app", vip: v4, mode: Local, app: app4, want: ErrInvalid},
		{name: "transparent without app", vip: v4, mode: Transparent, want: ErrInvalid},
		{name: "transparent other family", vip: v4, mode: Transparent, app: app6, want: ErrInvalid},
		{name: "exists", vip: localTCP4, mode: Local, want: ErrExists},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := a.AddVIP(c.vip, c.mode, c.app); !errors.Is(err, c.want) {
				t.Errorf("add vip: %v, want %v", err, c.want)
			}
		})
	}
	if err := a.RemoveVIP(v4); !errors.Is(err, ErrNotFound) {
		t.Errorf("remove missing vip: %v, want ErrNotFound", err)
	}
	if err := a.AddBackendAddr(backend4); !errors.Is(err, ErrExists) {
		t.Errorf("add backend address twice: %v, want ErrExists", err)
	}
	if err := a.AddBackendAddr(netip.Addr{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("add invalid backend address: %v, want ErrInvalid", err)
	}
	if err := a.RemoveBackendAddr(netip.MustParseAddr("10.9.9.9")); !errors.Is(err, ErrNotFound) {
		t.Errorf("remove missing backend address: %v, want ErrNotFound", err)
	}
	if got := a.VIPs()[transTCP6]; got != (Target{Mode: Transparent, App: app6}) {
		t.Errorf("VIPs()[%v] = %+v", transTCP6, got)
	}
}

func TestCapacity(t *testing.T) {
	testenv.RequirePriv(t)
	a, err := Load(Options{MaxVIPs: 1, MaxBackendAddrs: 1}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.AddVIP(localTCP4, Local, netip.AddrPort{}); err != nil {
		t.Fatal(err)
	}
	if err := a.AddVIP(localUDP4, Local, netip.AddrPort{}); !errors.Is(err, ErrFull) {
		t.Errorf("second vip: %v, want ErrFull", err)
	}
	if err := a.AddBackendAddr(backend4); err != nil {
		t.Fatal(err)
	}
	if err := a.AddBackendAddr(backend6); !errors.Is(err, ErrFull) {
		t.Errorf("second backend address: %v, want ErrFull", err)
	}
}

// TestRemove: removing a VIP or backend address takes effect on the next
// packet.
func TestRemove(t *testing.T) {
	a := newAgent(t, Config{})
	in := pkttest.GUE(outer(backend4), pkttest.IPPacket(tcp(toVM(client4, withPort(vip4, 80)), pkttest.SYN, "")))
	if err := a.RemoveVIP(localTCP4); err != nil {
		t.Fatal(err)
	}
	runEgress(t, a, egressCase{in: in, verdict: pkttest.TCActShot, stats: dropped("drop_unknown_vip")})
	if err := a.RemoveBackendAddr(backend4); err != nil {
		t.Fatal(err)
	}
	runEgress(t, a, egressCase{in: in, verdict: pkttest.TCActOK, stats: passed("pass_not_backend")})
}

// TestGUEPort: the GUE port comes from the configuration.
func TestGUEPort(t *testing.T) {
	a := newAgent(t, Config{})
	if err := a.SetConfig(Config{GUEPort: 7000}); err != nil {
		t.Fatal(err)
	}
	syn := tcp(toVM(client4, withPort(vip4, 80)), pkttest.SYN, "")
	f := outer(backend4)
	f.Dst = withPort(backend4, 7000)
	runEgress(t, a, egressCase{in: pkttest.GUE(f, pkttest.IPPacket(syn)), verdict: pkttest.TCActOK, want: syn, stats: local("decap_gue")})
	runEgress(t, a, egressCase{in: pkttest.GUE(outer(backend4), pkttest.IPPacket(syn)), verdict: pkttest.TCActOK, stats: passed("pass_not_encap")})
	if err := a.SetConfig(Config{UDPIdle: -1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("set config: %v, want ErrInvalid", err)
	}
	if a.Config().GUEPort != 7000 {
		t.Errorf("a rejected config changed the GUE port")
	}
}

// TestCounterNames: every counter the docs list exists.
func TestCounterNames(t *testing.T) {
	a := newAgent(t, Config{})
	c := readCounters(t, a)
	for _, n := range []string{"pass", "deliver_local", "deliver_transparent", "drop", "decap_gue", "decap_gue0", "decap_ipip",
		"conn_insert", "conn_expired", "reply_pass", "reply_rewritten", "reply_drop", "reply_icmp_rewritten", "drop_unknown_vip"} {
		if _, ok := c.Stats[n]; !ok {
			t.Errorf("no counter %q", n)
		}
	}
}

// TestConnTableSize: the table holds at most ConnTableSize entries; older
// ones are evicted rather than new ones refused.
func TestConnTableSize(t *testing.T) {
	testenv.RequirePriv(t)
	a, err := Load(Options{ConnTableSize: 16}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.AddBackendAddr(backend4); err != nil {
		t.Fatal(err)
	}
	if err := a.AddVIP(transTCP4, Transparent, app4); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		c := netip.AddrPortFrom(client4.Addr(), uint16(20000+i))
		res := pkttest.Run(t, a.Egress(), pkttest.GUE(outer(backend4), pkttest.IPPacket(tcp(toVM(c, withPort(vipT4, 80)), pkttest.SYN, ""))))
		if res.TC() != pkttest.TCActOK {
			t.Fatalf("packet %d: %v", i, res.TC())
		}
	}
	cs := readCounters(t, a)
	if cs.Stats["conn_insert"] != 200 || cs.Stats["conn_insert_failed"] != 0 {
		t.Errorf("conn_insert %d, conn_insert_failed %d, want 200 and 0", cs.Stats["conn_insert"], cs.Stats["conn_insert_failed"])
	}
	// The LRU keeps per-CPU free lists, so it may hold somewhat fewer
	// entries than its size, never more.
	if cs.Connections == 0 || cs.Connections > 16 {
		t.Errorf("%d entries, want between 1 and 16", cs.Connections)
	}
}
