package quickstart

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/sluice-dp/sluice/sim/topo"
)

// describe is a link's line in the topology summary.
func describe(l *topo.Link) string {
	return fmt.Sprintf("%-8s %-15s %s  <->  %-8s %-15s %s",
		l.A.Node.Name(), l.A.Addrs[0], l.A.MAC, l.B.Node.Name(), l.B.Addrs[0], l.B.MAC)
}

// WriteReport prints the run for a reader: topology, traffic, what each
// backend got, the LB's counters and the checks, ending with PASS or FAIL.
func (r *Result) WriteReport(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "\nTopology %s (deleted on exit), LB attached in %v mode\n", r.Prefix, r.Mode)
	for _, l := range r.Links {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	fmt.Fprintf(&b, "  router: %v/32 via %v (the LB node); LB: GUE from %v to the router's MAC\n", r.VIP, r.LB, r.LB)

	fmt.Fprintf(&b, "\nTraffic from client %v: %d UDP datagrams to %v:%d, %d TCP SYNs to %v:%d\n",
		r.Client, r.SentUDP, r.VIP, vipUDPPort, r.SentTCP, r.VIP, vipTCPPort)
	fmt.Fprintf(&b, "  %-9s %-12s %6s %12s %10s %10s %7s %13s\n",
		"backend", "address", "weight", "GUE packets", "UDP flows", "TCP flows", "share", "weight share")
	for _, be := range r.Backends {
		fmt.Fprintf(&b, "  %-9s %-12s %6d %12d %10d %10d %6.1f%% %12.1f%%\n",
			be.Name, be.Addr, be.Weight, be.Packets, be.UDPFlows, be.TCPFlows, 100*be.Share, 100*be.WeightShare)
	}

	if len(r.Counters) > 0 {
		fmt.Fprintf(&b, "\nLB counters (non-zero)\n  %s\n", counterLine(r.Counters))
	}

	if len(r.Checks) > 0 {
		fmt.Fprintf(&b, "\nChecks\n")
		for _, c := range r.Checks {
			mark := "ok  "
			if !c.OK {
				mark = "FAIL"
			}
			fmt.Fprintf(&b, "  %s %s: %s\n", mark, c.Name, c.Detail)
		}
	}
	if r.OK() {
		fmt.Fprintf(&b, "\nPASS\n")
	} else {
		fmt.Fprintf(&b, "\nFAIL\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// counterLine lists non-zero counters: the verdicts first, in the order a
// packet meets them, then the rest by name.
func counterLine(c map[string]uint64) string {
	order := map[string]int{"pass": 0, "tx": 1, "drop": 2}
	names := make([]string, 0, len(c))
	for n, v := range c {
		if v != 0 {
			names = append(names, n)
		}
	}
	sort.Slice(names, func(i, j int) bool {
		oi, iok := order[names[i]]
		oj, jok := order[names[j]]
		switch {
		case iok && jok:
			return oi < oj
		case iok != jok:
			return iok
		}
		return names[i] < names[j]
	})
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %d", n, c[n])
	}
	return strings.Join(parts, ", ")
}
