package scenario

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// base is a small valid scenario that the invalid cases below break one
// thing at a time.
const base = `name: t
description: a test
nodes:
  client: {role: client}
  router: {role: router}
  lb1: {role: lb}
  backend1: {role: backend}
links:
  - a: {node: client, addrs: [10.0.1.2/24]}
    b: {node: router, addrs: [10.0.1.1/24]}
  - a: {node: router, addrs: [10.0.2.1/24]}
    b: {node: lb1, addrs: [10.0.2.2/24]}
  - a: {node: router, addrs: [10.0.3.1/24]}
    b: {node: backend1, addrs: [10.0.3.2/24]}
routes:
  - {node: client, dst: 0.0.0.0/0, via: 10.0.1.1}
  - {node: router, dst: 192.0.2.1/32, via: 10.0.2.2}
lb:
  attach: lb1/router
  vips:
    - vip: 192.0.2.1:80/tcp
      backends: [10.0.3.2]
steps:
  - name: one
    send:
      - {at: client/router, kind: tcp-syn, src: 10.0.1.2/32, dst: 192.0.2.1:80}
    capture: [backend1/router]
    expect:
      - encapsulation: {at: backend1/router}
      - counters: {values: {tx: 1}}
`

func TestParseValid(t *testing.T) {
	sc, err := Parse("base.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if len(sc.Nodes) != 4 || len(sc.Links) != 3 || len(sc.Steps) != 1 || sc.LB == nil || len(sc.LB.VIPs) != 1 {
		t.Fatalf("parsed %+v", sc)
	}
	// Interface names default to the peer node's name.
	if got := sc.Links[0].A.Iface; got != "router" {
		t.Errorf("client's interface is %q, want router", got)
	}
	if s := sc.Steps[0].Send[0]; s.Flows != 1 || s.PacketsPerFlow != 1 || s.SrcPorts != [2]uint16{1024, 65535} {
		t.Errorf("send defaults %+v", s)
	}
	if c := sc.Steps[0].Expect[1].Counters.Values[0]; c.Name != "tx" || c.Min != 1 || c.Max != 1 {
		t.Errorf("counter %+v, want tx = 1", c)
	}
}

func TestShippedScenariosAreValid(t *testing.T) {
	files, err := filepath.Glob("../../scenarios/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios found: %v", err)
	}
	for _, f := range files {
		sc, err := Load(f)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if sc.Description == "" {
			t.Errorf("%s has no description", f)
		}
	}
}

func TestParseRejects(t *testing.T) {
	testRejects(t, base, []rejectCase{
		{"unknown top-level key", "name: t\n", "name: t\nnmae: x\n", "bad.yaml:2: nmae: unknown key, want one of agents, chains, connlimit, description, lb, links, name, nodes, ratelimit, routes, services, steps"},
		{"unknown nested key", "{node: client, addrs: [10.0.1.2/24]}", "{node: client, adrs: [10.0.1.2/24]}", "bad.yaml:9: links[0].a.adrs: unknown key"},
		{"bad address", "addrs: [10.0.1.2/24]", "addrs: [10.0.1.300/24]", `bad.yaml:9: links[0].a.addrs[0]: "10.0.1.300/24": want an address with prefix length`},
		{"bad gateway", "via: 10.0.1.1}", "via: 10.0.1}", `bad.yaml:16: routes[0].via: "10.0.1": want an IPv4 or IPv6 address`},
		{"gateway off link", "via: 10.0.1.1}", "via: 10.9.9.9}", "bad.yaml:16: routes[0].via: 10.9.9.9 is in no subnet of node client's interfaces"},
		{"unknown node in link", "b: {node: backend1,", "b: {node: backend9,", `bad.yaml:14: links[2].b.node: no node named "backend9"`},
		{"unknown node in route", "{node: client, dst", "{node: clinet, dst", `bad.yaml:16: routes[0].node: no node named "clinet"`},
		{"unknown interface", "attach: lb1/router", "attach: lb1/eth0", `bad.yaml:19: lb.attach: node lb1 has no interface "eth0" (it has [router])`},
		{"attach to non-lb node", "attach: lb1/router", "attach: backend1/router", "bad.yaml:19: lb.attach: node backend1 has role backend, want lb"},
		{"capture unknown interface", "capture: [backend1/router]", "capture: [backend1/lb1]", `bad.yaml:27: steps[0].capture: node backend1 has no interface "lb1"`},
		{"assertion at uncaptured point", "encapsulation: {at: backend1/router}", "encapsulation: {at: client/router}", "bad.yaml:29: steps[0].expect[0].encapsulation.at: client/router is not among the step's capture: points"},
		{"bad role", "lb1: {role: lb}", "lb1: {role: balancer}", `bad.yaml:6: nodes.lb1.role: "balancer": want one of client, router, lb, backend, server`},
		{"bad vip", "vip: 192.0.2.1:80/tcp", "vip: 192.0.2.1:80/sctp", `bad.yaml:21: lb.vips[0].vip: "192.0.2.1:80/sctp": want address:port/proto`},
		{"ipv4 backend of ipv6 vip", "vip: 192.0.2.1:80/tcp", "vip: '[2001:db8::1]:80/tcp'", "bad.yaml:22: lb.vips[0].backends: backend 10.0.3.2: an IPv6 VIP needs IPv6 backends"},
		{"bad send kind", "kind: tcp-syn", "kind: tcp-fin", `bad.yaml:26: steps[0].send[0].kind: "tcp-fin": want one of`},
		{"mixed families", "dst: 192.0.2.1:80}", "dst: '[2001:db8::1]:80'}", "bad.yaml:26: steps[0].send[0]: src 10.0.1.2/32 and dst [2001:db8::1]:80: want one address family"},
		{"two assertion kinds", "- counters: {values: {tx: 1}}", "- {counters: {values: {tx: 1}}, delivery: {min_ok: 1}}", "bad.yaml:30: steps[0].expect[1]: want a mapping with exactly one key"},
		{"unknown earlier step", "- counters: {values: {tx: 1}}", "- disruption: {before: zero, max_moved: 5%}", `bad.yaml:30: steps[0].expect[1].disruption.before: "zero": want the name of an earlier step`},
		{"fraction out of range", "- counters: {values: {tx: 1}}", "- disruption: {before: one, max_moved: 150%}", `bad.yaml:30: steps[0].expect[1].disruption.max_moved: "150%": want a fraction`},
		{"counter range reversed", "tx: 1}", "tx: [5, 1]}", "bad.yaml:30: steps[0].expect[1].counters.values.tx: [5, 1]: want min ≤ max"},
		{"missing required key", "description: a test\n", "", "bad.yaml:1: description: missing, required"},
		{"udp from unknown node", "    capture: [backend1/router]", "    udp:\n      - {from: clinet, dst: 10.0.3.2:53}\n    capture: [backend1/router]", `bad.yaml:28: steps[0].udp[0].from: no node named "clinet"`},
		{"udp to port 0", "    capture: [backend1/router]", "    udp:\n      - {from: client, dst: 10.0.3.2:0}\n    capture: [backend1/router]", "bad.yaml:28: steps[0].udp[0].dst: 10.0.3.2:0: want a port other than 0"},
		{"udp requests out of range", "    capture: [backend1/router]", "    udp:\n      - {from: client, dst: 10.0.3.2:53, requests: 0}\n    capture: [backend1/router]", "bad.yaml:28: steps[0].udp[0].requests: 0: want a whole number from 1 to 20000"},
		{"udp unknown key", "    capture: [backend1/router]", "    udp:\n      - {from: client, dst: 10.0.3.2:53, count: 5}\n    capture: [backend1/router]", "bad.yaml:28: steps[0].udp[0].count: unknown key, want one of dst, from, requests, timeout"},
		{"delivery without requests", "- counters: {values: {tx: 1}}", "- delivery: {min_ok: 1}", "bad.yaml:30: steps[0].expect[1].delivery: the step sends no http: or udp: requests"},
		{"service with http and udp", "steps:\n", "services:\n  - {node: backend1, http: 10.0.3.2:80, udp: 10.0.3.2:53}\nsteps:\n", "bad.yaml:24: services[0]: want exactly one of http and udp"},
		{"service with neither", "steps:\n", "services:\n  - {node: backend1}\nsteps:\n", "bad.yaml:24: services[0]: want exactly one of http and udp"},
		{"udp service on the gue port", "steps:\n", "services:\n  - {node: backend1, udp: 10.0.3.2:6080}\nsteps:\n", "bad.yaml:24: services[0].udp: port 6080 is the GUE port"},
		{"mtu out of range", "{node: client, addrs: [10.0.1.2/24]}", "{node: client, addrs: [10.0.1.2/24], mtu: 100}", "bad.yaml:9: links[0].a.mtu: 100: want a whole number from 1280 to 9000"},
		{"sysctl outside net", "client: {role: client}", "client: {role: client, sysctls: {kernel.panic: 1}}", "bad.yaml:4: nodes.client.sysctls.kernel.panic: want a net.* sysctl name"},
	})
}

// rejectCase breaks a valid scenario by replacing old with new, and wants
// an error line that starts with want: the whole location and path prefix.
type rejectCase struct {
	name     string
	old, new string
	want     string
}

// testRejects runs each case against base.
func testRejects(t *testing.T, base string, cases []rejectCase) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(base, c.old) {
				t.Fatalf("bad case: base has no %q", c.old)
			}
			src := strings.Replace(base, c.old, c.new, 1)
			_, err := Parse("bad.yaml", []byte(src))
			if err == nil {
				t.Fatalf("accepted:\n%s", src)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not match ErrInvalid: %v", err)
			}
			var found bool
			for _, line := range strings.Split(err.Error(), "\n") {
				found = found || strings.HasPrefix(line, c.want)
			}
			if !found {
				t.Errorf("errors:\n%v\nwant a line starting with:\n%s", err, c.want)
			}
		})
	}
}

func TestParseRejectsNonScenario(t *testing.T) {
	for _, src := range []string{"", "- a\n- b\n", "name: [\n", "name: a\n---\nname: b\n"} {
		if _, err := Parse("x.yaml", []byte(src)); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) = %v, want ErrInvalid", src, err)
		}
	}
}
