package lb

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"

	"github.com/sluice-dp/sluice/dataplane/attach"
	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/internal/pkttest"
	"github.com/sluice-dp/sluice/internal/testenv"
)

// Tests of the Go API of the package: validation, errors, capacity, the
// effect of API calls on traffic, counters, Lookup and Attach.

var (
	apiVIP4    = netip.MustParseAddr("192.0.2.40")
	apiVIP6    = netip.MustParseAddr("2001:db8:40::40")
	apiClient4 = netip.MustParseAddrPort("198.51.100.40:40040")
)

// apiExpectErr requires err to wrap sentinel and to name what the caller
// must fix.
func apiExpectErr(t testing.TB, err, sentinel error, names ...string) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Errorf("error %v, want one wrapping %q", err, sentinel)
		return
	}
	for _, n := range names {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("error %q does not name %q", err, n)
		}
	}
}

// apiSendSYN sends a SYN of client to vip and checks that it went out in GUE
// toward backend, encapsulated as cfg says (gateway MAC, GUE port and the
// hash seed, which sets the outer source port).
func apiSendSYN(t testing.TB, l *LB, cfg Config, client, vip netip.AddrPort, backend netip.Addr) {
	t.Helper()
	f := connFlow(client, vip)
	in := pkttest.TCP(f, pkttest.SYN)
	res, d := connRun(t, l, in)
	if res.Verdict != pkttest.XDPTX {
		t.Fatalf("SYN: verdict %v, want %v", res.Verdict, pkttest.XDPTX)
	}
	connCheckDeltas(t, "SYN", d, connBalanced("conn_miss", "conn_miss_syn"))
	h := modelFlowHash(client, vip, cfg.Seed)
	src := cfg.SourceV4
	outer := pkttest.Flow{SrcMAC: nodeMAC, DstMAC: cfg.GatewayMAC, DF: f.DF || client.Addr().Is6()}
	if backend.Is6() {
		src = cfg.SourceV6
		outer.FlowLabel = h & 0xfffff
	}
	outer.Src = netip.AddrPortFrom(src, uint16(49152+h&0x3fff))
	outer.Dst = netip.AddrPortFrom(backend, cfg.GUEPort)
	pkttest.Expect(t, pkttest.GUE(outer, pkttest.IPPacket(in)), res.Out, pkttest.GUEPort(cfg.GUEPort))
	pkttest.VerifyChecksums(t, res.Packet, pkttest.GUEPort(cfg.GUEPort))
}

func TestAPILoadRejects(t *testing.T) {
	withCfg := func(change func(*Config)) Config {
		c := testConfig()
		change(&c)
		return c
	}
	cases := []struct {
		name  string
		opts  Options
		cfg   Config
		field string
	}{
		{name: "ring size not in the prime list", opts: Options{RingSize: 1000}, cfg: testConfig(), field: "ring size"},
		{name: "ring size a power of two", opts: Options{RingSize: 65536}, cfg: testConfig(), field: "ring size"},
		{name: "connection table of 8 entries", opts: Options{ConnTableSize: 8}, cfg: testConfig(), field: "connection table size"},
		{name: "more VIPs than the vips map can count", opts: Options{MaxVIPs: 1 << 31}, cfg: testConfig(), field: "max vips"},
		{name: "more backends than the reals map can count", opts: Options{MaxBackends: math.MaxUint32}, cfg: testConfig(), field: "max backends"},
		{name: "tunnel MTU below IPv6's minimum plus overhead", cfg: withCfg(func(c *Config) { c.TunnelMTU = 1327 }), field: "tunnel_mtu"},
		{name: "tunnel MTU above jumbo frames", cfg: withCfg(func(c *Config) { c.TunnelMTU = 9217 }), field: "tunnel_mtu"},
		{name: "missing gateway MAC", cfg: withCfg(func(c *Config) { c.GatewayMAC = nil }), field: "gateway_mac"},
		{name: "gateway MAC of 8 bytes", cfg: withCfg(func(c *Config) { c.GatewayMAC = net.HardwareAddr{2, 0, 0, 0, 0, 0, 0, 1} }), field: "gateway_mac"},
		{name: "IPIP IPv6 prefix not a /64", cfg: withCfg(func(c *Config) { c.IPIPPrefixV6 = netip.MustParsePrefix("100::/48") }), field: "ipip_prefix_v6"},
		{name: "IPIP IPv4 prefix of IPv6", cfg: withCfg(func(c *Config) { c.IPIPPrefixV4 = netip.MustParsePrefix("fd00::/64") }), field: "ipip_prefix_v4"},
		{name: "IPv4 source that is IPv6", cfg: withCfg(func(c *Config) { c.SourceV4 = netip.MustParseAddr("fd00::2") }), field: "source_v4"},
		{name: "IPv6 source that is IPv4", cfg: withCfg(func(c *Config) { c.SourceV6 = netip.MustParseAddr("10.0.0.2") }), field: "source_v6"},
		{name: "negative UDP idle time", cfg: withCfg(func(c *Config) { c.UDPIdle = -time.Second }), field: "udp_idle"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, err := Load(c.opts, c.cfg)
			if err == nil {
				l.Close()
				t.Fatalf("Load accepted %+v / %+v", c.opts, c.cfg)
			}
			apiExpectErr(t, err, ErrInvalid, c.field)
		})
	}
}

func TestAPISetConfigRejected(t *testing.T) {
	// Every bad config also changes valid fields that would show in the
	// encapsulated packet (seed → outer source port, gateway MAC, GUE
	// port), so that a half-applied config cannot go unnoticed.
	bad := func(change func(*Config)) Config {
		c := testConfig()
		c.Seed = 0x1234567
		c.GatewayMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xee}
		c.GUEPort = 7000
		c.TunnelMTU = 1400
		change(&c)
		return c
	}
	cases := []struct {
		name  string
		cfg   Config
		field string
	}{
		{"tunnel MTU too small", bad(func(c *Config) { c.TunnelMTU = 1000 }), "tunnel_mtu"},
		{"missing gateway MAC", bad(func(c *Config) { c.GatewayMAC = nil }), "gateway_mac"},
		{"IPIP IPv6 prefix not a /64", bad(func(c *Config) { c.IPIPPrefixV6 = netip.MustParsePrefix("100::/56") }), "ipip_prefix_v6"},
		{"IPv4 source that is IPv6", bad(func(c *Config) { c.SourceV4 = netip.MustParseAddr("fd00::9") }), "source_v4"},
		{"no IPv4 source while an IPv4 backend exists", bad(func(c *Config) { c.SourceV4 = netip.Addr{} }), "source_v4"},
	}
	l := newLB(t, Options{RingSize: connRingSize})
	v := VIP{Addr: apiVIP4, Port: 80, Proto: l4.TCP}
	backend := netip.MustParseAddr("10.4.0.1")
	addVIP(t, l, v, VIPOptions{}, Backend{Addr: backend, Weight: 1})
	old := l.Config()
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := l.SetConfig(c.cfg)
			apiExpectErr(t, err, ErrInvalid, c.field)
			if got := l.Config(); !reflect.DeepEqual(got, old) {
				t.Errorf("config after the rejected SetConfig:\n%+v\nwant the old one:\n%+v", got, old)
			}
			client := netip.AddrPortFrom(apiClient4.Addr(), uint16(20000+i))
			apiSendSYN(t, l, old, client, netip.AddrPortFrom(v.Addr, v.Port), backend)
		})
	}
	// A good config after the bad ones takes effect, which shows the
	// checks above could see a change.
	good := bad(func(*Config) {})
	if err := l.SetConfig(good); err != nil {
		t.Fatalf("set a valid config: %v", err)
	}
	apiSendSYN(t, l, l.Config(), netip.AddrPortFrom(apiClient4.Addr(), 30000), netip.AddrPortFrom(v.Addr, v.Port), backend)
}

func TestAPIVIPErrors(t *testing.T) {
	l := newLB(t, Options{RingSize: connRingSize})
	v := VIP{Addr: apiVIP4, Port: 80, Proto: l4.TCP}
	addVIP(t, l, v, VIPOptions{}, be("10.4.0.1"))
	unknown := VIP{Addr: apiVIP4, Port: 81, Proto: l4.TCP}
	cases := []struct {
		name     string
		call     func() error
		sentinel error
		names    []string
	}{
		{"adding a VIP twice", func() error { return l.AddVIP(v, VIPOptions{}) }, ErrExists, []string{v.String()}},
		{"adding it twice with other options", func() error { return l.AddVIP(v, VIPOptions{Stateless: true}) }, ErrExists, []string{v.String()}},
		{"removing an unknown VIP", func() error { return l.RemoveVIP(unknown) }, ErrNotFound, []string{unknown.String()}},
		{"setting the backends of an unknown VIP", func() error { return l.SetBackends(unknown, []Backend{be("10.4.0.1")}) }, ErrNotFound, []string{unknown.String()}},
		{"listing the backends of an unknown VIP", func() error { _, err := l.Backends(unknown); return err }, ErrNotFound, []string{unknown.String()}},
		{"a VIP of protocol ICMP", func() error { return l.AddVIP(VIP{Addr: apiVIP4, Port: 1, Proto: 1}, VIPOptions{}) }, ErrInvalid, []string{"protocol"}},
		{"a VIP without an address", func() error { return l.AddVIP(VIP{Port: 80, Proto: l4.TCP}, VIPOptions{}) }, ErrInvalid, []string{"address"}},
		{"a VIP on an IPv4-mapped IPv6 address", func() error {
			return l.AddVIP(VIP{Addr: netip.MustParseAddr("::ffff:192.0.2.41"), Port: 80, Proto: l4.TCP}, VIPOptions{})
		}, ErrInvalid, []string{"::ffff:192.0.2.41"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			apiExpectErr(t, c.call(), c.sentinel, c.names...)
			if got := l.VIPs(); !slices.Equal(got, []VIP{v}) {
				t.Errorf("VIPs after the failed call: %v, want [%v]", got, v)
			}
		})
	}
}

func TestAPISetBackendsRejected(t *testing.T) {
	v4 := VIP{Addr: apiVIP4, Port: 80, Proto: l4.TCP}
	v6 := VIP{Addr: apiVIP6, Port: 80, Proto: l4.TCP}
	noV4 := testConfig()
	noV4.SourceV4 = netip.Addr{}
	tooMany := make([]Backend, 252)
	for i := range tooMany {
		tooMany[i] = Backend{Addr: netip.AddrFrom4([4]byte{10, 5, byte(i >> 8), byte(i)}), Weight: 1}
	}
	cases := []struct {
		name    string
		ring    uint32 // ring size; 0 for connRingSize
		cfg     Config
		vip     VIP
		initial Backend
		set     []Backend
		names   []string
	}{
		{
			name: "the same address twice", cfg: testConfig(), vip: v4, initial: be("10.4.0.1"),
			set: []Backend{be("10.4.0.2"), be("10.4.0.3"), be("10.4.0.2")}, names: []string{"10.4.0.2", "twice"},
		},
		{
			name: "weight 0", cfg: testConfig(), vip: v4, initial: be("10.4.0.1"),
			set: []Backend{be("10.4.0.2"), {Addr: netip.MustParseAddr("10.4.0.3")}}, names: []string{"10.4.0.3", "weight"},
		},
		{
			name: "an IPv4 backend without source_v4", cfg: noV4, vip: v4, initial: be("fd00:4::1"),
			set: []Backend{be("10.4.0.2")}, names: []string{"10.4.0.2", "source_v4"},
		},
		{
			name: "an IPv4 backend for an IPv6 VIP", cfg: testConfig(), vip: v6, initial: be("fd00:4::1"),
			set: []Backend{be("fd00:4::2"), be("10.4.0.2")}, names: []string{"10.4.0.2", "IPv6 VIP"},
		},
		{
			name: "a zero address", cfg: testConfig(), vip: v4, initial: be("10.4.0.1"),
			set: []Backend{{Weight: 1}}, names: []string{"address"},
		},
		{
			name: "the unspecified IPv4 address", cfg: testConfig(), vip: v4, initial: be("10.4.0.1"),
			set: []Backend{be("10.4.0.2"), be("0.0.0.0")}, names: []string{"0.0.0.0", "address"},
		},
		{
			name: "the unspecified IPv6 address", cfg: testConfig(), vip: v6, initial: be("fd00:4::1"),
			set: []Backend{be("::")}, names: []string{"::", "address"},
		},
		{
			name: "more backends up than ring slots", ring: 251, cfg: testConfig(), vip: v4, initial: be("10.4.0.1"),
			set: tooMany, names: []string{"252", "251"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			testenv.RequirePriv(t)
			ring := c.ring
			if ring == 0 {
				ring = connRingSize
			}
			l, err := Load(Options{RingSize: ring}, c.cfg)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			t.Cleanup(func() { l.Close() })
			addVIP(t, l, c.vip, VIPOptions{}, c.initial)

			apiExpectErr(t, l.SetBackends(c.vip, c.set), ErrInvalid, c.names...)
			got, err := l.Backends(c.vip)
			if err != nil || !slices.Equal(got, []Backend{c.initial}) {
				t.Errorf("backends after the rejected set: %d, first %v, %v; want [%v]", len(got), got[:min(len(got), 3)], err, c.initial)
			}
			client := apiClient4
			if c.vip.Addr.Is6() {
				client = netip.MustParseAddrPort("[2001:db8:c40::1]:40000")
			}
			apiSendSYN(t, l, l.Config(), client, netip.AddrPortFrom(c.vip.Addr, c.vip.Port), c.initial.Addr)
		})
	}
}

func TestAPICapacity(t *testing.T) {
	t.Run("VIPs", func(t *testing.T) {
		const max = 3
		l := newLB(t, Options{RingSize: connRingSize, MaxVIPs: max})
		// One address per VIP, so that the address markers fill the
		// vips map too.
		vip := func(i int) VIP {
			return VIP{Addr: netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + i)}), Port: 80, Proto: l4.TCP}
		}
		for i := range max {
			addVIP(t, l, vip(i), VIPOptions{}, be("10.4.0.1"))
		}
		apiExpectErr(t, l.AddVIP(vip(max), VIPOptions{}), ErrFull, vip(max).String(), fmt.Sprint(max))
		if n := len(l.VIPs()); n != max {
			t.Errorf("%d VIPs after the refused one, want %d", n, max)
		}
		if err := l.RemoveVIP(vip(0)); err != nil {
			t.Fatalf("remove %v: %v", vip(0), err)
		}
		addVIP(t, l, vip(max), VIPOptions{}, be("10.4.0.9"))
		// The VIP that took the freed slot works.
		apiSendSYN(t, l, l.Config(), apiClient4, netip.AddrPortFrom(vip(max).Addr, 80), netip.MustParseAddr("10.4.0.9"))
	})
	t.Run("backends", func(t *testing.T) {
		const max = 4
		l := newLB(t, Options{RingSize: connRingSize, MaxBackends: max})
		a := VIP{Addr: apiVIP4, Port: 80, Proto: l4.TCP}
		b := VIP{Addr: apiVIP4, Port: 443, Proto: l4.TCP}
		// MaxBackends counts (VIP, backend) pairs: one backend address
		// used by two VIPs takes two.
		addVIP(t, l, a, VIPOptions{}, be("10.4.0.1"), be("10.4.0.2"))
		addVIP(t, l, b, VIPOptions{}, be("10.4.0.1"))
		three := []Backend{be("10.4.0.1"), be("10.4.0.3"), be("10.4.0.4")}
		apiExpectErr(t, l.SetBackends(b, three), ErrFull, b.String(), fmt.Sprint(max))
		if got, _ := l.Backends(b); !slices.Equal(got, []Backend{be("10.4.0.1")}) {
			t.Errorf("backends of %v after the refused set: %v", b, got)
		}
		if err := l.SetBackends(b, three[:2]); err != nil {
			t.Fatalf("fill the last pair: %v", err)
		}
		// Every pair is usable: the last one allocated carries traffic.
		var to4 netip.AddrPort
		size, seed := l.Options().RingSize, l.Config().Seed
		ring := newModelRing(t, three[:2], size, seed)
		for p := 1024; ; p++ {
			c := netip.AddrPortFrom(apiClient4.Addr(), uint16(p))
			if ring.pick(modelFlowHash(c, netip.AddrPortFrom(b.Addr, b.Port), seed)) == three[1].Addr {
				to4 = c
				break
			}
		}
		apiSendSYN(t, l, l.Config(), to4, netip.AddrPortFrom(b.Addr, b.Port), three[1].Addr)
		// Removing a VIP frees its pairs.
		if err := l.RemoveVIP(a); err != nil {
			t.Fatalf("remove %v: %v", a, err)
		}
		if err := l.SetBackends(b, three); err != nil {
			t.Errorf("set 3 backends once 2 pairs are free: %v", err)
		}
	})
}

func TestAPIRemoveVIP(t *testing.T) {
	l := newLB(t, Options{RingSize: connRingSize})
	http := VIP{Addr: apiVIP4, Port: 80, Proto: l4.TCP}
	https := VIP{Addr: apiVIP4, Port: 443, Proto: l4.TCP}
	addVIP(t, l, http, VIPOptions{}, be("10.4.0.1"))
	addVIP(t, l, https, VIPOptions{}, be("10.4.0.1"))
	client := apiClient4

	ping := pkttest.Flow{SrcMAC: clientMAC, DstMAC: nodeMAC, Src: client, Dst: netip.AddrPortFrom(apiVIP4, 0)}
	pong := pkttest.Flow{SrcMAC: nodeMAC, DstMAC: clientMAC, Src: ping.Dst, Dst: ping.Src}
	tcpTo := func(port uint16) []byte {
		return pkttest.TCP(connFlow(client, netip.AddrPortFrom(apiVIP4, port)), pkttest.SYN)
	}
	// A fragment is malformed for the balancer: dropped when aimed at a
	// VIP address, left to the stack otherwise.
	fragment := func() []byte {
		f := connFlow(client, netip.AddrPortFrom(apiVIP4, 80))
		f.DF = false
		in := pkttest.TCP(f, pkttest.ACK)
		in[14+6] |= 0x20 // more fragments
		return in
	}
	type probe struct {
		name    string
		in      []byte
		verdict pkttest.Verdict
		want    []byte // nil: unchanged (XDP_PASS) or not checked (XDP_DROP)
		stats   map[string]uint64
	}
	answered := probe{"echo request", pkttest.ICMPEcho(ping, 9, 1), pkttest.XDPTX, pkttest.ICMPEchoReply(pong, 9, 1), connStatsOf("tx", "icmp_echo_reply")}
	ignored := probe{"echo request", pkttest.ICMPEcho(ping, 9, 1), pkttest.XDPPass, nil, connStatsOf("pass", "pass_not_vip")}
	balanced := func(port uint16) probe {
		vip := netip.AddrPortFrom(apiVIP4, port)
		in := tcpTo(port)
		want := connGUE(in, connFlow(client, vip), netip.MustParseAddr("10.4.0.1"), modelFlowHash(client, vip, l.Config().Seed))
		return probe{fmt.Sprintf("SYN to port %d", port), in, pkttest.XDPTX, want, connBalanced("conn_miss", "conn_miss_syn")}
	}
	passed := func(port uint16) probe {
		return probe{fmt.Sprintf("SYN to port %d", port), tcpTo(port), pkttest.XDPPass, nil, connStatsOf("pass", "pass_not_vip")}
	}
	steps := []struct {
		name   string
		remove VIP
		probes []probe
	}{
		{"both VIPs", VIP{}, []probe{answered, balanced(80), balanced(443),
			{"fragment", fragment(), pkttest.XDPDrop, nil, connStatsOf("drop", "drop_fragment")}}},
		{"port 80 removed", http, []probe{answered, passed(80), balanced(443)}},
		{"both removed", https, []probe{ignored, passed(80), passed(443),
			{"fragment", fragment(), pkttest.XDPPass, nil, connStatsOf("pass", "pass_not_vip")}}},
	}
	for _, s := range steps {
		if s.remove.Addr.IsValid() {
			if err := l.RemoveVIP(s.remove); err != nil {
				t.Fatalf("remove %v: %v", s.remove, err)
			}
		}
		for _, p := range s.probes {
			what := s.name + ": " + p.name
			orig := append([]byte(nil), p.in...)
			res, d := connRun(t, l, p.in)
			if res.Verdict != p.verdict {
				t.Errorf("%s: verdict %v, want %v", what, res.Verdict, p.verdict)
				continue
			}
			connCheckDeltas(t, what, d, p.stats)
			switch {
			case p.want != nil:
				pkttest.Expect(t, p.want, res.Out)
				pkttest.VerifyChecksums(t, res.Packet)
			case p.verdict == pkttest.XDPPass:
				pkttest.Expect(t, orig, res.Out)
			}
		}
	}
}

func TestAPISeedRehash(t *testing.T) {
	l := newLB(t, Options{RingSize: connRingSize})
	testenv.LockAnyCPU(t)
	v := VIP{Addr: apiVIP4, Port: 80, Proto: l4.TCP}
	bs := []Backend{be("10.4.0.1"), be("10.4.0.2"), be("10.4.0.3"), be("10.4.0.4")}
	addVIP(t, l, v, VIPOptions{}, bs...)
	vipAP := netip.AddrPortFrom(v.Addr, v.Port)
	size := l.Options().RingSize
	oldSeed, newSeed := l.Config().Seed, uint64(0xfeedface01)
	oldRing, newRing := newModelRing(t, bs, size, oldSeed), newModelRing(t, bs, size, newSeed)

	const flows = 300
	client := func(i int) netip.AddrPort { return netip.AddrPortFrom(apiClient4.Addr(), uint16(10000+i)) }
	lookup := func(i int) netip.Addr {
		t.Helper()
		got, err := l.Lookup(v, client(i))
		if err != nil {
			t.Fatalf("lookup %v: %v", client(i), err)
		}
		return got
	}
	for i := range flows {
		if got, want := lookup(i), oldRing.pick(modelFlowHash(client(i), vipAP, oldSeed)); got != want {
			t.Errorf("seed %#x: %v goes to %v, want %v", oldSeed, client(i), got, want)
		}
	}
	cfg := l.Config()
	cfg.Seed = newSeed
	if err := l.SetConfig(cfg); err != nil {
		t.Fatalf("set seed: %v", err)
	}
	moved := 0
	for i := range flows {
		was := oldRing.pick(modelFlowHash(client(i), vipAP, oldSeed))
		want := newRing.pick(modelFlowHash(client(i), vipAP, newSeed))
		if want != was {
			moved++
		}
		if got := lookup(i); got != want {
			t.Errorf("seed %#x: %v goes to %v, want %v (%v with the old seed)", newSeed, client(i), got, want, was)
		}
	}
	// With four backends about three flows in four change; none moving
	// would mean the check above could not tell the seeds apart.
	if moved < flows/2 {
		t.Errorf("only %d of %d flows change backend with the new seed", moved, flows)
	}
}

func TestAPITrafficCounters(t *testing.T) {
	l := newLB(t, Options{RingSize: connRingSize})
	v := VIP{Addr: apiVIP4, Port: 80, Proto: l4.TCP}
	other := VIP{Addr: apiVIP4, Port: 443, Proto: l4.TCP}
	bs := []Backend{be("10.4.0.1"), be("10.4.0.2")}
	addVIP(t, l, v, VIPOptions{}, bs...)
	addVIP(t, l, other, VIPOptions{}, be("10.4.0.9"))
	vipAP := netip.AddrPortFrom(v.Addr, v.Port)
	seed := l.Config().Seed
	ring := newModelRing(t, bs, l.Options().RingSize, seed)

	read := func() Counters {
		t.Helper()
		c, err := l.Counters()
		if err != nil {
			t.Fatalf("read counters: %v", err)
		}
		return c
	}
	// send sends one segment of each payload size from its own client port
	// and returns the traffic the counters must show: bytes are the inner
	// IP length, 20 + 20 + payload.
	send := func(to netip.AddrPort, firstPort int, payloads ...int) (Traffic, map[netip.Addr]Traffic) {
		t.Helper()
		var total Traffic
		per := make(map[netip.Addr]Traffic)
		for i, n := range payloads {
			client := netip.AddrPortFrom(apiClient4.Addr(), uint16(firstPort+i))
			f := connFlow(client, to)
			f.Payload = make([]byte, n)
			res := pkttest.Run(t, l.Program(), pkttest.TCP(f, pkttest.ACK|pkttest.PSH))
			if res.Verdict != pkttest.XDPTX {
				t.Fatalf("segment %d: verdict %v", i, res.Verdict)
			}
			b := uint64(40 + n)
			total.Packets++
			total.Bytes += b
			if to == vipAP {
				dst := ring.pick(modelFlowHash(client, to, seed))
				per[dst] = Traffic{per[dst].Packets + 1, per[dst].Bytes + b}
			}
		}
		return total, per
	}
	check := func(what string, c Counters, vip VIP, want Traffic, wantPer map[netip.Addr]Traffic, backends []Backend) {
		t.Helper()
		if got := c.VIPs[vip]; got != want {
			t.Errorf("%s: %v counted %+v, want %+v", what, vip, got, want)
		}
		for _, b := range backends {
			if got := c.Backends[vip][b.Addr]; got != wantPer[b.Addr] {
				t.Errorf("%s: %v backend %v counted %+v, want %+v", what, vip, b.Addr, got, wantPer[b.Addr])
			}
		}
	}

	want, wantPer := send(vipAP, 1000, 0, 1, 100, 1000, 1400, 7, 333)
	if len(wantPer) < 2 {
		t.Fatalf("all test flows hash to one backend; pick other ports")
	}
	otherWant, _ := send(netip.AddrPortFrom(other.Addr, other.Port), 2000, 50)
	c := read()
	check("after traffic", c, v, want, wantPer, bs)
	check("after traffic", c, other, otherWant, map[netip.Addr]Traffic{netip.MustParseAddr("10.4.0.9"): otherWant}, []Backend{be("10.4.0.9")})

	oldID := l.vips[v].id
	if err := l.RemoveVIP(v); err != nil {
		t.Fatalf("remove: %v", err)
	}
	addVIP(t, l, v, VIPOptions{}, bs...)
	if id := l.vips[v].id; id != oldID {
		t.Fatalf("re-added VIP got id %d, not %d: the reset below tests nothing", id, oldID)
	}
	c = read()
	check("after re-adding", c, v, Traffic{}, nil, bs)
	check("after re-adding the other VIP", c, other, otherWant, map[netip.Addr]Traffic{netip.MustParseAddr("10.4.0.9"): otherWant}, []Backend{be("10.4.0.9")})

	want, wantPer = send(vipAP, 3000, 10, 20, 30)
	check("after new traffic", read(), v, want, wantPer, bs)
}

func TestAPILookup(t *testing.T) {
	t.Run("not balanced", func(t *testing.T) {
		l := newLB(t, Options{RingSize: connRingSize})
		empty := VIP{Addr: apiVIP4, Port: 80, Proto: l4.TCP}
		down := VIP{Addr: apiVIP4, Port: 81, Proto: l4.TCP}
		gone := VIP{Addr: apiVIP4, Port: 82, Proto: l4.UDP}
		addVIP(t, l, empty, VIPOptions{})
		addVIP(t, l, down, VIPOptions{}, Backend{Addr: netip.MustParseAddr("10.4.0.1"), Weight: 1, Down: true})
		addVIP(t, l, gone, VIPOptions{}, be("10.4.0.1"))
		if err := l.RemoveVIP(gone); err != nil {
			t.Fatalf("remove: %v", err)
		}
		for _, v := range []VIP{empty, down, gone} {
			if got, err := l.Lookup(v, apiClient4); !errors.Is(err, ErrNotBalanced) {
				t.Errorf("lookup %v: %v, %v; want ErrNotBalanced", v, got, err)
			}
		}
		if got, err := l.Lookup(empty, netip.MustParseAddrPort("[2001:db8::1]:1")); !errors.Is(err, ErrInvalid) {
			t.Errorf("lookup of an IPv6 client of an IPv4 VIP: %v, %v; want ErrInvalid", got, err)
		}
	})
	t.Run("weighted shares", func(t *testing.T) {
		l := newLB(t, Options{RingSize: connRingSize})
		testenv.LockAnyCPU(t)
		v := VIP{Addr: apiVIP4, Port: 443, Proto: l4.TCP}
		bs := []Backend{
			{Addr: netip.MustParseAddr("10.4.0.1"), Weight: 1},
			{Addr: netip.MustParseAddr("10.4.0.2"), Weight: 2},
			{Addr: netip.MustParseAddr("10.4.0.3"), Weight: 3},
		}
		addVIP(t, l, v, VIPOptions{}, bs...)
		seed := l.Config().Seed
		ring := newModelRing(t, bs, l.Options().RingSize, seed)
		vipAP := netip.AddrPortFrom(v.Addr, v.Port)

		const flows = 6000
		counts := make(map[netip.Addr]int)
		for i := range flows {
			client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(100 + i%4), byte(i / 4 % 250)}), uint16(1024+i))
			got, err := l.Lookup(v, client)
			if err != nil {
				t.Fatalf("lookup %v: %v", client, err)
			}
			if want := ring.pick(modelFlowHash(client, vipAP, seed)); got != want {
				t.Errorf("lookup %v: %v, want %v", client, got, want)
			}
			counts[got]++
		}
		// The ring's shares are exact to a slot (ctl/maglev), so the counts
		// are a multinomial draw from well-mixed hashes: each within 5
		// standard deviations, sqrt(n·p·(1−p)) ≈ 29, 37 and 39 flows, of
		// n·p. A ring ignoring weights would be off by 1000.
		for _, b := range bs {
			p := float64(b.Weight) / 6
			mean, sd := flows*p, math.Sqrt(flows*p*(1-p))
			if d := math.Abs(float64(counts[b.Addr]) - mean); d > 5*sd {
				t.Errorf("backend %v of weight %d got %d of %d flows, want %.0f ± %.0f", b.Addr, b.Weight, counts[b.Addr], flows, mean, 5*sd)
			}
		}
		// Lookup probes with RSTs, which the program never inserts.
		if c, err := l.Counters(); err != nil || c.Stats["conn_hit"] != 0 {
			t.Errorf("lookups hit the connection table %d times (%v)", c.Stats["conn_hit"], err)
		}
	})
}

// apiNetns moves the calling goroutine's thread into a new, unnamed network
// namespace until the test ends; the namespace disappears with its last
// handle and thread. Call it from the test goroutine, and run nothing that
// needs the namespace in subtests (they run on other threads).
func apiNetns(t *testing.T) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get current netns: %v", err)
	}
	ns, err := netns.New()
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		err := netns.Set(orig)
		ns.Close()
		orig.Close()
		if err != nil {
			// Stay locked: the runtime destroys the thread with the
			// goroutine instead of reusing it in the wrong namespace.
			t.Errorf("return to the original netns: %v", err)
			return
		}
		runtime.UnlockOSThread()
	})
}

func TestAPIAttach(t *testing.T) {
	l := newLB(t, Options{RingSize: connRingSize})
	info, err := l.Program().Info()
	if err != nil {
		t.Fatalf("program info: %v", err)
	}
	progID, ok := info.ID()
	if !ok {
		t.Fatalf("program info has no id")
	}
	apiNetns(t)
	const dev = "lbapi0"
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: dev}, PeerName: "lbapi1"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	for _, name := range []string{dev, "lbapi1"} {
		lk, err := netlink.LinkByName(name)
		if err != nil {
			t.Fatalf("find %s: %v", name, err)
		}
		if err := netlink.LinkSetUp(lk); err != nil {
			t.Fatalf("set %s up: %v", name, err)
		}
	}
	xdp := func() *netlink.LinkXdp {
		t.Helper()
		lk, err := netlink.LinkByName(dev)
		if err != nil {
			t.Fatalf("find %s: %v", dev, err)
		}
		return lk.Attrs().Xdp
	}
	modes := []struct {
		mode   attach.Mode
		kernel uint32 // IFLA_XDP_ATTACHED value the kernel reports
	}{
		{attach.Native, nl.XDP_ATTACHED_DRV},
		{attach.Generic, nl.XDP_ATTACHED_SKB},
	}
	for _, m := range modes {
		a, err := l.Attach(dev, m.mode)
		if err != nil {
			t.Errorf("attach in %v mode: %v", m.mode, err)
			continue
		}
		if a.Interface != dev || a.Mode != m.mode {
			t.Errorf("attachment says %s/%v, want %s/%v", a.Interface, a.Mode, dev, m.mode)
		}
		x := xdp()
		if x == nil || !x.Attached || x.ProgId != uint32(progID) || x.AttachMode != m.kernel {
			t.Errorf("%v mode: %s reports XDP %+v, want program %d attached in mode %d", m.mode, dev, x, progID, m.kernel)
		}
		if err := a.Close(); err != nil {
			t.Errorf("%v mode: close: %v", m.mode, err)
		}
		if x := xdp(); x != nil && (x.Attached || x.ProgId != 0) {
			t.Errorf("%v mode: after Close %s still reports XDP %+v", m.mode, dev, x)
		}
	}
	const missing = "lbapi-none0"
	if a, err := l.Attach(missing, attach.Native); err == nil {
		a.Close()
		t.Errorf("attach to %s succeeded", missing)
	} else if !strings.Contains(err.Error(), missing) {
		t.Errorf("attach to a missing interface: %q does not name %s", err, missing)
	}
}
