// Package scenario is the simulator's scenario engine: it reads a YAML
// scenario (docs/scenarios.md), validates it completely before anything
// is built, builds its topology of network namespaces with sim/topo,
// loads and attaches the real XDP load balancer on the LB nodes and the
// chains of XDP programs (rate limit, connection limit, LB), drives
// crafted and real traffic through it with sim/traffic, evaluates the
// scenario's assertions and reports each one with what was observed.
//
// Expected values never come from the program under test: where a flow
// should land is computed here from ctl/jhash and ctl/maglev, what an
// encapsulated packet should look like from the wire format of
// docs/lb.md, and checksums are recomputed by internal/pkttest.
//
// A run owns its topology: every namespace, veth and BPF object is gone
// when Run returns, whether the scenario passed, failed, was cancelled or
// panicked.
package scenario
