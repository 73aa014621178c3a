package ratelimit

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/dataplane/police"
	"github.com/sluice-dp/sluice/internal/pkttest"
	"github.com/sluice-dp/sluice/internal/testenv"
)

// A bad rule set is rejected with an error naming what is wrong, and the
// rule set running before keeps running.
func TestRuleValidation(t *testing.T) {
	web := Match{Addr: vip4, Port: 80, Proto: l4.TCP}
	good := Rule{Match: web, Rate: 1, Window: time.Minute}
	cases := []struct {
		name  string
		rules []Rule
		want  string
	}{
		{"no limit", []Rule{{Match: web}}, "rate or source_rate must be set"},
		{"unknown protocol", []Rule{{Match: Match{Proto: 1}, Rate: 1}}, "proto"},
		{"rst for udp", []Rule{{Match: Match{Proto: l4.UDP}, Rate: 1, Action: police.RST}}, "only tcp"},
		{"unknown action", []Rule{{Match: web, Rate: 1, Action: 9}}, "action"},
		{"window too short", []Rule{{Match: web, Rate: 1000, Window: time.Millisecond}}, "window"},
		{"window too long", []Rule{{Match: web, Rate: 1, Window: time.Hour}}, "window"},
		{"fractional budget", []Rule{{Match: web, Rate: 15, Window: 100 * time.Millisecond}}, "whole number"},
		{"budget too large", []Rule{{Match: web, Rate: 1 << 22}}, "at most 4194303"},
		{"source budget too large", []Rule{{Match: web, SourceRate: 1 << 22}}, "source_rate"},
		{"ipv4 prefix", []Rule{{Match: web, SourceRate: 1, SourcePrefixV4: 33}}, "source_prefix_v4"},
		{"ipv6 prefix", []Rule{{Match: web, SourceRate: 1, SourcePrefixV6: 129}}, "source_prefix_v6"},
		{"mapped address", []Rule{{Match: Match{Addr: netip.MustParseAddr("::ffff:192.0.2.1")}, Rate: 1}}, "IPv4-mapped"},
		{"unspecified address", []Rule{{Match: Match{Addr: netip.MustParseAddr("0.0.0.0")}, Rate: 1}}, "specific address"},
		{"duplicate match", []Rule{good, {Match: web, Rate: 2}}, "same match as rule 0"},
		{"too many rules", manyRules(17), "at most 16"},
	}
	l := newLimiter(t, good)
	exhausted(t, l, web)
	before := l.Rules()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := l.SetRules(append([]Rule{good}, c.rules...)[1:])
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
			if got := l.Rules(); !reflect.DeepEqual(got, before) {
				t.Errorf("rules changed to %+v", got)
			}
			// The old rule, and its exhausted state, still apply.
			run(t, l, syn(client4, netip.AddrPortFrom(vip4, 80)), pkttest.XDPDrop)
		})
	}
}

func manyRules(n int) []Rule {
	rules := make([]Rule, n)
	for i := range rules {
		rules[i] = Rule{Match: Match{Port: uint16(1000 + i), Proto: l4.TCP}, Rate: 1}
	}
	return rules
}

// Replacing the rule set keeps the state and counters of rules whose match,
// window and source grouping did not change, and starts the others afresh.
func TestRuleReplacement(t *testing.T) {
	web := Match{Addr: vip4, Port: 80, Proto: l4.TCP}
	api := Match{Addr: vip4, Port: 443, Proto: l4.TCP}
	l := newLimiter(t, Rule{Match: web, Rate: 1, Window: time.Minute}, Rule{Match: api, Rate: 1, Window: time.Minute})
	exhausted(t, l, web)
	run(t, l, syn(client4, netip.AddrPortFrom(vip4, 80)), pkttest.XDPDrop)
	state := getAggregate(t, l, web)

	// A new rate and action keep the state: the exhausted window is still
	// exhausted, now answered with a reset.
	if err := l.SetRules([]Rule{{Match: web, Rate: 1, Window: time.Minute, Action: police.RST}}); err != nil {
		t.Fatalf("set rules: %v", err)
	}
	if got := getAggregate(t, l, web); got != state {
		t.Errorf("state %+v after a rate change, want it kept: %+v", got, state)
	}
	run(t, l, syn(client4, netip.AddrPortFrom(vip4, 80)), pkttest.XDPTX)
	if got := counters(t, l).Rules[web].Rule; got != (Scope{Seen: 2, Refused: 2}) {
		t.Errorf("rule counters %+v, want both SYNs kept", got)
	}
	if _, ok := counters(t, l).Rules[api]; ok {
		t.Errorf("removed rule %v still has counters", api)
	}

	// A new window starts afresh: a new budget, counters from zero.
	if err := l.SetRules([]Rule{{Match: web, Rate: 1, Window: 30 * time.Second}}); err != nil {
		t.Fatalf("set rules: %v", err)
	}
	if got := getAggregate(t, l, web); got != (windowState{}) {
		t.Errorf("state %+v after a window change, want zero", got)
	}
	if got := counters(t, l).Rules[web]; got != (RuleCounters{}) {
		t.Errorf("counters %+v after a window change, want zero", got)
	}
	run(t, l, syn(client4, netip.AddrPortFrom(vip4, 80)), pkttest.XDPPass)

	// Rules returns the set with defaults filled in.
	want := []Rule{{Match: web, Rate: 1, Window: 30 * time.Second,
		SourcePrefixV4: DefaultSourcePrefixV4, SourcePrefixV6: DefaultSourcePrefixV6}}
	if got := l.Rules(); !reflect.DeepEqual(got, want) {
		t.Errorf("rules %+v, want %+v", got, want)
	}
}

// A removed rule's per-source entries are never found by a rule that
// later reuses its slot: a new rule instance has a new generation.
func TestSourceStateNotInherited(t *testing.T) {
	web := Match{Port: 80, Proto: l4.TCP}
	l := newLimiter(t, Rule{Match: web, SourceRate: 1, Window: time.Minute})
	dst := netip.AddrPortFrom(vip4, 80)
	if got := sendSYNs(t, l, client4, dst, 61); got != 60 {
		t.Fatalf("%d of 61 admitted, want 60", got)
	}
	if err := l.SetRules(nil); err != nil {
		t.Fatalf("clear rules: %v", err)
	}
	if err := l.SetRules([]Rule{{Match: web, SourceRate: 1, Window: time.Minute}}); err != nil {
		t.Fatalf("set rules: %v", err)
	}
	if got := sendSYNs(t, l, client4, dst, 1); got != 1 {
		t.Errorf("the new rule refused a source the old rule had exhausted")
	}
}

// Loaded with a chain's maps, the program uses them: here an empty chain,
// after which the program's own verdict stands.
func TestChainMaps(t *testing.T) {
	testenv.RequirePriv(t)
	spec, err := loadRatelimit()
	if err != nil {
		t.Fatalf("load spec: %v", err)
	}
	maps := map[string]*ebpf.Map{}
	for _, name := range []string{"chain_progs", "chain_cursor"} {
		m, err := ebpf.NewMap(spec.Maps[name])
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		t.Cleanup(func() { m.Close() })
		maps[name] = m
	}
	l, err := Load(Options{ChainMaps: maps})
	if err != nil {
		t.Fatalf("load with chain maps: %v", err)
	}
	defer l.Close()
	for name, m := range map[string]*ebpf.Map{"chain_progs": l.objs.ChainProgs, "chain_cursor": l.objs.ChainCursor} {
		if mapID(t, m) != mapID(t, maps[name]) {
			t.Errorf("program uses its own %s, not the chain's", name)
		}
	}
	run(t, l, syn(client4, netip.AddrPortFrom(vip4, 80)), pkttest.XDPPass)
}

func mapID(t *testing.T, m *ebpf.Map) ebpf.MapID {
	t.Helper()
	info, err := m.Info()
	if err != nil {
		t.Fatalf("map info: %v", err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatalf("map info without an id")
	}
	return id
}

func TestOptionsValidation(t *testing.T) {
	for _, o := range []Options{{MaxSources: 8}, {MaxRules: 1<<20 + 1}} {
		if _, err := Load(o); !errors.Is(err, ErrInvalid) {
			t.Errorf("Load(%+v): error %v, want ErrInvalid", o, err)
		}
	}
}

// TestRuleValidate checks the exported check against what SetRules
// accepts: defaults filled in first (a rule with only a rate is whole), the
// same refusals otherwise. It needs no BPF.
func TestRuleValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		rule Rule
		ok   bool
	}{
		{"rate only, defaults filled in", Rule{Rate: 100}, true},
		{"source rate only", Rule{SourceRate: 5}, true},
		{"no rate", Rule{}, false},
		{"window too short", Rule{Rate: 100, Window: time.Millisecond}, false},
		{"fractional budget", Rule{Rate: 3, Window: 100 * time.Millisecond}, false},
		{"rst on udp", Rule{Match: Match{Proto: l4.UDP}, Rate: 1, Action: police.RST}, false},
	} {
		err := c.rule.Validate()
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("%s: Validate() = %v, want ok=%v (errors wrap ErrInvalid)", c.name, err, c.ok)
		}
	}
}
