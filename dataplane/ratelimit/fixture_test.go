package ratelimit

import (
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/dataplane/internal/bpfenc"
	"github.com/sluice-dp/sluice/internal/pkttest"
	"github.com/sluice-dp/sluice/internal/testenv"
)

// Addresses of the test topology. They never leave BPF_PROG_RUN.
var (
	vip4    = netip.MustParseAddr("192.0.2.10")
	vip6    = netip.MustParseAddr("2001:db8::10")
	client4 = netip.MustParseAddrPort("198.51.100.7:40000")
	client6 = netip.MustParseAddrPort("[2001:db8:1::7]:40000")
	// The MACs pkttest puts on frames by default: the client's side (or the
	// router's) and ours.
	peerMAC = pkttest.DefaultSrcMAC
	ourMAC  = pkttest.DefaultDstMAC
)

// newLimiter loads a program with small maps and installs rules; it is
// closed when the test ends.
func newLimiter(t testing.TB, rules ...Rule) *Limiter {
	t.Helper()
	testenv.RequirePriv(t)
	l, err := Load(Options{MaxRules: 16, MaxSources: 1024})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	if err := l.SetRules(rules); err != nil {
		t.Fatalf("set rules: %v", err)
	}
	return l
}

func counters(t testing.TB, l *Limiter) Counters {
	t.Helper()
	c, err := l.Counters()
	if err != nil {
		t.Fatalf("counters: %v", err)
	}
	return c
}

// syn is a TCP SYN from src to dst (sequence number 1, no options).
func syn(src, dst netip.AddrPort) []byte {
	return pkttest.TCP(pkttest.Flow{Src: src, Dst: dst}, pkttest.SYN)
}

// run runs frame and fails the test unless the verdict is want.
func run(t testing.TB, l *Limiter, frame []byte, want pkttest.Verdict) pkttest.Result {
	t.Helper()
	res := pkttest.Run(t, l.Program(), frame)
	if res.Verdict != want {
		t.Fatalf("verdict %v, want %v", res.Verdict, want)
	}
	return res
}

// clock is CLOCK_MONOTONIC in nanoseconds, the clock bpf_ktime_get_ns
// reads.
func clock(t testing.TB) uint64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatalf("read monotonic clock: %v", err)
	}
	return uint64(ts.Nano())
}

// installedRule is the slots the program knows the rule of m by.
func installedRule(t testing.TB, l *Limiter, m Match) installed {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	in, ok := l.rules[m]
	if !ok {
		t.Fatalf("no rule %v installed", m)
	}
	return in
}

// Field widths of a window state, from the C header's enum.
const (
	countBits = uint64(ratelimitRlWindowBitsRL_WINDOW_COUNT_BITS)
	idxBits   = uint64(ratelimitRlWindowBitsRL_WINDOW_IDX_BITS)
)

// windowState is a window state as the test reads the layout documented in
// the C header: window index since the rule's epoch, prev, cur.
type windowState struct {
	idx, prev, cur uint64
}

func (s windowState) pack() uint64 {
	return s.idx<<(2*countBits) | s.prev<<countBits | s.cur
}

func unpack(v uint64) windowState {
	m := uint64(1)<<countBits - 1
	return windowState{idx: v >> (2 * countBits), prev: v >> countBits & m, cur: v & m}
}

func getAggregate(t testing.TB, l *Limiter, m Match) windowState {
	t.Helper()
	var v uint64
	if err := l.objs.Aggregate.Lookup(installedRule(t, l, m).id, &v); err != nil {
		t.Fatalf("read aggregate state: %v", err)
	}
	return unpack(v)
}

func setAggregate(t testing.TB, l *Limiter, m Match, s windowState) {
	t.Helper()
	if err := l.objs.Aggregate.Put(installedRule(t, l, m).id, s.pack()); err != nil {
		t.Fatalf("write aggregate state: %v", err)
	}
}

// srcKey is the per-source key of the rule of m for source prefix p,
// written from the prefix independently of the program's masking.
func srcKey(t testing.TB, l *Limiter, m Match, p netip.Prefix) ratelimitRlSrcKey {
	t.Helper()
	in := installedRule(t, l, m)
	k := ratelimitRlSrcKey{Addr: bpfenc.AddrWords(p.Masked().Addr()), Gen: in.gen, Family: 6}
	if p.Addr().Is4() {
		k.Family = 4
	}
	return k
}

func getSource(t testing.TB, l *Limiter, m Match, p netip.Prefix) (windowState, bool) {
	t.Helper()
	k := srcKey(t, l, m, p)
	var v uint64
	if err := l.objs.Sources.Lookup(&k, &v); err != nil {
		return windowState{}, false
	}
	return unpack(v), true
}

func setSource(t testing.TB, l *Limiter, m Match, p netip.Prefix, s windowState) {
	t.Helper()
	k := srcKey(t, l, m, p)
	if err := l.objs.Sources.Put(&k, s.pack()); err != nil {
		t.Fatalf("write source state: %v", err)
	}
}

// windowAt is the index, since the rule's epoch, of the window of the rule
// of m that contains time now.
func windowAt(t testing.TB, l *Limiter, m Match, now uint64) uint64 {
	t.Helper()
	in := installedRule(t, l, m)
	return (now - in.epoch) / uint64(in.rule.Window.Nanoseconds()) & (1<<idxBits - 1)
}

// setEpoch moves the start of the windows of the rule of m, in the active
// rule table and in the Limiter's record of it.
func setEpoch(t testing.TB, l *Limiter, m Match, epoch uint64) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	in := l.rules[m]
	var table *ebpf.Map
	if err := l.objs.Rules.Lookup(uint32(0), &table); err != nil {
		t.Fatalf("read rule table: %v", err)
	}
	defer table.Close()
	k := ruleKey(m)
	var v ratelimitRlRule
	if err := table.Lookup(&k, &v); err != nil {
		t.Fatalf("read rule %v: %v", m, err)
	}
	v.EpochNs = epoch
	if err := table.Put(&k, &v); err != nil {
		t.Fatalf("write rule %v: %v", m, err)
	}
	in.epoch = epoch
	l.rules[m] = in
}

// rst is the RST|ACK a host's TCP answers a SYN with, built with gopacket
// from the RFC's rules: from the SYN's destination to its source, MACs
// swapped, seq 0, the given ack, window 0, no options, TTL 64; IPv4 id 0
// without DF, IPv6 traffic class and flow label 0.
func rst(t testing.TB, from, to netip.AddrPort, vlan uint16, ack uint32) []byte {
	t.Helper()
	f := pkttest.Flow{SrcMAC: ourMAC, DstMAC: peerMAC, VLAN: vlan, Src: from, Dst: to, TTL: 64}
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(from.Port()),
		DstPort: layers.TCPPort(to.Port()),
		Ack:     ack,
		RST:     true,
		ACK:     true,
	}
	return pkttest.Serialize(t, append(f.Headers(layers.IPProtocolTCP), tcp)...)
}

// synWith is a SYN carrying TCP options and a payload, with a chosen
// sequence number (and FIN when fin).
func synWith(t testing.TB, f pkttest.Flow, seq uint32, fin bool, payload []byte) []byte {
	t.Helper()
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(f.Src.Port()),
		DstPort: layers.TCPPort(f.Dst.Port()),
		Seq:     seq,
		SYN:     true,
		FIN:     fin,
		Window:  64240,
		Options: []layers.TCPOption{
			{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
			{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
			{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: make([]byte, 8)},
			{OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
		},
	}
	return pkttest.Serialize(t, append(f.Headers(layers.IPProtocolTCP), tcp, gopacket.Payload(payload))...)
}
