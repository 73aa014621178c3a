package scenario

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dp/sluice/dataplane/connlimit"
	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/dataplane/police"
	"github.com/sluice-dp/sluice/dataplane/ratelimit"
)

// policeBase is base with a chain, the policing programs and connection
// loads in place of its steps.
var policeBase = strings.SplitN(base, "steps:\n", 2)[0] + `ratelimit:
  rules:
    - {dst: 192.0.2.1:80, rate: 100, action: rst}
    - {dst: 53, proto: udp, source_rate: 20, source_prefix_v4: 24, window: 500ms}
connlimit:
  ports:
    - {port: 80, max: 3}
chains:
  - {attach: lb1/router, programs: [ratelimit, lb]}
steps:
  - name: one
    connect:
      - {from: client, dst: 192.0.2.1:80, rate: 200, duration: 3s}
    hold:
      - {name: h, from: client, dst: 192.0.2.1:80, count: 2, timeout: 200ms}
    expect:
      - admitted_rate: {from: client, rate: 100}
      - connections: {from: client, ok: 2}
      - chain_intact: {at: lb1/router, programs: [ratelimit, lb]}
      - counters: {values: {ratelimit.refused: 1, connlimit.count.80: 0, chain.packets: 1, tx: 1}}
  - name: two
    events:
      - chain: {attach: lb1/router, programs: [connlimit, ratelimit, lb]}
      - close: {hold: h, count: 1}
`

func TestParsePolice(t *testing.T) {
	sc, err := Parse("base.yaml", []byte(policeBase))
	if err != nil {
		t.Fatal(err)
	}
	want := []ratelimit.Rule{
		{Match: ratelimit.Match{Addr: netip.MustParseAddr("192.0.2.1"), Port: 80, Proto: l4.TCP}, Rate: 100,
			SourcePrefixV4: 32, SourcePrefixV6: 64, Window: time.Second, Action: police.RST},
		{Match: ratelimit.Match{Port: 53, Proto: l4.UDP}, SourceRate: 20,
			SourcePrefixV4: 24, SourcePrefixV6: 64, Window: 500 * time.Millisecond, Action: police.Drop},
	}
	if sc.RateLimit == nil || len(sc.RateLimit.Rules) != 2 || sc.RateLimit.Rules[0] != want[0] || sc.RateLimit.Rules[1] != want[1] {
		t.Errorf("rules %+v, want %+v", sc.RateLimit, want)
	}
	if sc.ConnLimit == nil || len(sc.ConnLimit.Ports) != 1 || sc.ConnLimit.Ports[80] != (connlimit.Limit{Max: 3, Action: police.Drop}) {
		t.Errorf("connlimit %+v, want port 80 max 3 drop", sc.ConnLimit)
	}
	if len(sc.Chains) != 1 || sc.Chains[0].Attach != (Iface{"lb1", "router"}) || strings.Join(sc.Chains[0].Programs, " ") != "ratelimit lb" {
		t.Errorf("chains %+v", sc.Chains)
	}
	st := sc.Steps[0]
	if c := st.Connect[0]; c.Rate != 200 || c.Duration != 3*time.Second || c.Timeout != 500*time.Millisecond {
		t.Errorf("connect %+v, want rate 200 for 3s with the default 500ms timeout", c)
	}
	if h := st.Hold[0]; h.Name != "h" || h.Count != 2 || h.Timeout != 200*time.Millisecond {
		t.Errorf("hold %+v", h)
	}
	if a := st.Expect[0].AdmittedRate; a == nil || a.Rate != 100 || a.Tolerance != 0.05 {
		t.Errorf("admitted_rate %+v, want rate 100 with the default 5%% tolerance", a)
	}
	if c := st.Expect[1].Connections; c == nil || c.OK == nil || *c.OK != 2 || c.Refused != nil || c.Timeout != nil || c.Failed != nil {
		t.Errorf("connections %+v, want ok 2 and nothing else checked", c)
	}
	ev := sc.Steps[1].Events
	if len(ev) != 2 || ev[0].Chain == nil || len(ev[0].Chain.Programs) != 3 || ev[1].Close == nil || *ev[1].Close != (CloseHold{"h", 1}) {
		t.Errorf("events %+v", ev)
	}
}

func TestParseRejectsPolice(t *testing.T) {
	testRejects(t, policeBase, []rejectCase{
		{"lb not last", "programs: [ratelimit, lb]}\nsteps", "programs: [lb, ratelimit]}\nsteps", "bad.yaml:31: chains[0].programs[0]: want lb last"},
		{"lb off lb.attach", "{attach: lb1/router, programs: [ratelimit, lb]}\nsteps", "{attach: lb1/router, programs: [ratelimit, lb]}\n  - {attach: backend1/router, programs: [lb]}\nsteps", "bad.yaml:32: chains[1].programs[0]: the LB runs only on an interface of lb.attach, and backend1/router is none"},
		{"two chains on one interface", "{attach: lb1/router, programs: [ratelimit, lb]}\nsteps", "{attach: lb1/router, programs: [ratelimit, lb]}\n  - {attach: lb1/router, programs: []}\nsteps", "bad.yaml:32: chains[1].attach: lb1/router has a chain already"},
		{"unknown program", "programs: [ratelimit, lb]}\nsteps", "programs: [firewall, lb]}\nsteps", `bad.yaml:31: chains[0].programs[0]: "firewall": want one of ratelimit, connlimit, lb`},
		{"program twice", "programs: [ratelimit, lb]}\nsteps", "programs: [ratelimit, ratelimit, lb]}\nsteps", "bad.yaml:31: chains[0].programs[1]: ratelimit listed twice"},
		{"program without its section", "connlimit:\n  ports:\n    - {port: 80, max: 3}\n", "", "bad.yaml:42: steps[1].events[0].chain.programs[0]: needs the scenario's connlimit: section"},
		{"section no chain runs", "programs: [connlimit, ratelimit, lb]}", "programs: [ratelimit, lb]}", "bad.yaml:28: connlimit: no chain runs connlimit"},
		{"chain event without chain", "chain: {attach: lb1/router, programs: [connlimit", "chain: {attach: client/router, programs: [connlimit", "bad.yaml:45: steps[1].events[0].chain.attach: client/router has no chain (chains: lb1/router)"},
		{"close unknown hold", "close: {hold: h,", "close: {hold: g,", `bad.yaml:46: steps[1].events[1].close.hold: "g": want the name of a hold: of an earlier step`},
		{"hold name twice", "      - close: {hold: h, count: 1}\n", "      - close: {hold: h, count: 1}\n    hold:\n      - {name: h, from: client, dst: 192.0.2.1:80, count: 1}\n", `bad.yaml:48: steps[1].hold[0].name: "h": another hold has this name`},
		{"hold count 0", "count: 2, timeout", "count: 0, timeout", "bad.yaml:37: steps[0].hold[0].count: 0: want a whole number from 1 to 10000"},
		{"connect timeout too long", "duration: 3s}", "duration: 3s, timeout: 1s}", `bad.yaml:35: steps[0].connect[0].timeout: 1s: want less than 1s, the SYN retransmission time`},
		{"connect rate 0", "rate: 200,", "rate: 0,", "bad.yaml:35: steps[0].connect[0].rate: 0: want a whole number from 1 to 10000"},
		{"connect to port 0", "{from: client, dst: 192.0.2.1:80, rate", "{from: client, dst: 192.0.2.1:0, rate", "bad.yaml:35: steps[0].connect[0].dst: 192.0.2.1:0: want a port other than 0"},
		{"admitted_rate of a short load", "duration: 3s}", "duration: 1500ms}", "bad.yaml:39: steps[0].expect[0].admitted_rate.from: connect[0] from client lasts 1.5s: want at least 2s"},
		{"admitted_rate without load", "admitted_rate: {from: client", "admitted_rate: {from: router", "bad.yaml:39: steps[0].expect[0].admitted_rate.from: the step has no connect: from router"},
		{"connections without counts", "connections: {from: client, ok: 2}", "connections: {from: client}", "bad.yaml:40: steps[0].expect[1].connections: want at least one of ok, refused, timeout, failed"},
		{"connections without load", "connections: {from: client, ok: 2}", "connections: {from: backend1, ok: 2}", "bad.yaml:40: steps[0].expect[1].connections.from: the step has no connect: or hold: from backend1"},
		{"chain_intact of a program not always there", "chain_intact: {at: lb1/router, programs: [ratelimit, lb]}", "chain_intact: {at: lb1/router, programs: [connlimit]}", "bad.yaml:41: steps[0].expect[2].chain_intact.programs[0]: connlimit was not in the chain at lb1/router all the time"},
		{"chain_intact without chain", "chain_intact: {at: lb1/router", "chain_intact: {at: backend1/router", "bad.yaml:41: steps[0].expect[2].chain_intact.at: backend1/router has no chain"},
		{"counter of an unknown program", "ratelimit.refused: 1", "firewall.refused: 1", `bad.yaml:42: steps[0].expect[3].counters.values.firewall.refused: "firewall": want an LB counter name without prefix`},
		{"counter of a program the node lacks", "counters: {values: {ratelimit.refused: 1, connlimit.count.80: 0, chain.packets: 1, tx: 1}}", "counters: {node: backend1, values: {ratelimit.refused: 1}}", "bad.yaml:42: steps[0].expect[3].counters.values.ratelimit.refused: no chain on node backend1 runs ratelimit"},
		{"rule with a bad dst", "{dst: 192.0.2.1:80, rate", "{dst: 192.0.2.1:0, rate", `bad.yaml:25: ratelimit.rules[0].dst: "192.0.2.1:0": want any, a port (80)`},
		{"rule without rate", "{dst: 192.0.2.1:80, rate: 100, action: rst}", "{dst: 192.0.2.1:80, action: rst}", "bad.yaml:25: ratelimit.rules[0]: rate: invalid: rate or source_rate must be set"},
		{"rule budget not whole", "source_rate: 20, source_prefix_v4: 24, window: 500ms", "source_rate: 21, source_prefix_v4: 24, window: 500ms", "bad.yaml:26: ratelimit.rules[1]: source_rate 21: invalid: rate × window 500ms is not a whole number"},
		{"rst for udp", "proto: udp,", "proto: udp, action: rst,", "bad.yaml:26: ratelimit.rules[1]: action rst: invalid: only tcp rules can answer with a reset"},
		{"rule twice", "{dst: 53, proto: udp,", "{dst: 192.0.2.1:80, proto: tcp,", "bad.yaml:26: ratelimit.rules[1]: a rule for tcp 192.0.2.1:80 exists already"},
		{"window out of range", "window: 500ms}", "window: 5ms}", "bad.yaml:26: ratelimit.rules[1]: window 5ms: invalid: between 10ms and 1m0s"},
		{"source prefix out of range", "source_prefix_v4: 24", "source_prefix_v4: 33", `bad.yaml:26: ratelimit.rules[1].source_prefix_v4: "33": want a whole number from 0 to 32`},
		{"bad action", "{port: 80, max: 3}", "{port: 80, max: 3, action: reject}", `bad.yaml:29: connlimit.ports[0].action: "reject": want drop or rst`},
		{"bad proto", "proto: udp,", "proto: sctp,", `bad.yaml:26: ratelimit.rules[1].proto: "sctp": want tcp or udp`},
		{"connlimit max 0", "{port: 80, max: 3}", "{port: 80, max: 0}", "bad.yaml:29: connlimit.ports[0].max: 0: want at least 1 connection"},
		{"connlimit port twice", "{port: 80, max: 3}", "{port: 80, max: 3}\n    - {port: 80, max: 5, action: rst}", "bad.yaml:30: connlimit.ports[1]: port 80 limited twice"},
	})
}
