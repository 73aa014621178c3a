package scenario

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/cilium/ebpf"

	"github.com/sluice-dp/sluice/dataplane/attach"
	"github.com/sluice-dp/sluice/dataplane/chain"
	"github.com/sluice-dp/sluice/dataplane/connlimit"
	"github.com/sluice-dp/sluice/dataplane/ratelimit"
	"github.com/sluice-dp/sluice/sim/traffic"
)

// This file builds and drives the chains of XDP programs (chains:) with
// the policing programs they run.

// chainNode is one chain: its root, attached to an interface, and the
// programs loaded for it. Every program a chain lists at some point of the
// run is loaded when the chain is built, as a member of this chain, so
// that an event only reorders programs that already run.
type chainNode struct {
	at    Iface
	chain *chain.Chain
	att   *chain.Attachment
	rl    *ratelimit.Limiter
	cl    *connlimit.Limiter
	lb    *lbNode
	// programs is the list in force.
	programs []string
}

func (n *chainNode) close() error {
	var errs []error
	if n.att != nil {
		errs = append(errs, n.att.Close())
	}
	errs = append(errs, n.chain.Close())
	if n.cl != nil {
		errs = append(errs, n.cl.Close())
	}
	if n.rl != nil {
		errs = append(errs, n.rl.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("release chain of %s: %w", n.at, err)
	}
	return nil
}

// chained reports whether a chain runs on i, which then runs the LB there
// if the LB is attached to i.
func (w *world) chained(i Iface) bool {
	return slices.ContainsFunc(w.sc.Chains, func(c ChainSpec) bool { return c.Attach == i })
}

// chainPrograms returns every program the chain at i lists, initially or
// in an event.
func (w *world) chainPrograms(i Iface) map[string]bool {
	m := map[string]bool{}
	for _, c := range w.sc.Chains {
		if c.Attach == i {
			maps.Copy(m, setOf(c.Programs))
		}
	}
	for _, st := range w.sc.Steps {
		for _, e := range st.Events {
			if e.Chain != nil && e.Chain.Attach == i {
				maps.Copy(m, setOf(e.Chain.Programs))
			}
		}
	}
	return m
}

// startChain loads a chain's root and programs, configures the programs
// as the scenario says, sets the initial list and attaches the root in
// the run's mode.
func (w *world) startChain(s ChainSpec, mode attach.Mode) error {
	c, err := chain.Load(chain.XDP, chain.Options{})
	if err != nil {
		return fmt.Errorf("load chain for %s: %w", s.Attach, err)
	}
	n := &chainNode{at: s.Attach, chain: c}
	w.closers = append(w.closers, n.close)
	w.chains = append(w.chains, n)
	node := w.nodes[s.Attach.Node]
	progs := w.chainPrograms(s.Attach)
	if progs[ProgRateLimit] {
		if n.rl, err = ratelimit.Load(ratelimit.Options{ChainMaps: c.MemberMaps()}); err != nil {
			return fmt.Errorf("load ratelimit for %s: %w", s.Attach, err)
		}
		// A rule's windows start when the rule is set, on the monotonic
		// clock (bpf/include/ratelimit.h). Set on a whole second, so
		// that the seconds of the connect loads, which start on whole
		// seconds too, are the rules' one-second windows: admitted_rate
		// then measures what one window admits, not parts of two.
		at, err := traffic.NextWholeSecond(0)
		if err != nil {
			return err
		}
		time.Sleep(time.Until(at))
		if err := n.rl.SetRules(w.sc.RateLimit.Rules); err != nil {
			return fmt.Errorf("ratelimit on %s: %w", s.Attach, err)
		}
	}
	if progs[ProgConnLimit] {
		// The limiter counts the sockets of the namespace it is loaded
		// in: the node's.
		err := node.Do(func() error {
			var err error
			if n.cl, err = connlimit.Load(connlimit.Options{ChainMaps: c.MemberMaps()}); err != nil {
				return err
			}
			if err := n.cl.SetPorts(w.sc.ConnLimit.Ports); err != nil {
				return err
			}
			return n.cl.Start()
		})
		if err != nil {
			return fmt.Errorf("connlimit on %s: %w", s.Attach, err)
		}
	}
	if progs[ProgLB] {
		i := slices.IndexFunc(w.lbs, func(l *lbNode) bool { return l.node == s.Attach.Node })
		if i < 0 {
			return fmt.Errorf("chain on %s: %w: no lb loaded on node %s", s.Attach, ErrInvalid, s.Attach.Node)
		}
		n.lb = w.lbs[i]
	}
	if err := n.set(s.Programs); err != nil {
		return err
	}
	if mode == attach.Native {
		// As for the LB: a frame the chain sends back with XDP_TX (a
		// RST, an encapsulated packet) reaches the other end of a veth
		// only if an XDP program runs there.
		peer := w.peers[s.Attach]
		if err := peer.Node.AttachXDPPass(peer.Iface); err != nil {
			return err
		}
	}
	err = node.Do(func() error {
		var err error
		n.att, err = c.Attach(s.Attach.Name, chain.AttachOptions{Mode: mode})
		return err
	})
	if err != nil {
		return fmt.Errorf("chain on %s: %w", s.Attach, err)
	}
	return nil
}

// set makes progs the chain's list, with one switch.
func (n *chainNode) set(progs []string) error {
	members := make([]chain.Member, 0, len(progs))
	for _, p := range progs {
		prog := n.program(p)
		if prog == nil {
			return fmt.Errorf("chain on %s: %w: %s was not loaded for it", n.at, ErrInvalid, p)
		}
		members = append(members, chain.Member{Name: p, Program: prog})
	}
	if err := n.chain.Set(members); err != nil {
		return fmt.Errorf("chain on %s: %w", n.at, err)
	}
	n.programs = slices.Clone(progs)
	return nil
}

func (n *chainNode) program(name string) *ebpf.Program {
	switch {
	case name == ProgRateLimit && n.rl != nil:
		return n.rl.Program()
	case name == ProgConnLimit && n.cl != nil:
		return n.cl.Program()
	case name == ProgLB && n.lb != nil:
		return n.lb.lb.Program()
	}
	return nil
}

// processed is the number of packets a program of the chain ran on, by
// its own counters: ratelimit's "packets"; for connlimit and the LB the sum
// of their verdict counters, each of which counts every packet once.
func (n *chainNode) processed(name string) (uint64, error) {
	var stats map[string]uint64
	var sum []string
	switch {
	case name == ProgRateLimit && n.rl != nil:
		c, err := n.rl.Counters()
		if err != nil {
			return 0, fmt.Errorf("read counters of ratelimit on %s: %w", n.at, err)
		}
		stats, sum = c.Stats, []string{"packets"}
	case name == ProgConnLimit && n.cl != nil:
		c, err := n.cl.Counters()
		if err != nil {
			return 0, fmt.Errorf("read counters of connlimit on %s: %w", n.at, err)
		}
		stats, sum = c, []string{"pass", "drop_limit", "drop_limit_ack", "tx_rst", "tx_rst_ack", "drop_rst_failed"}
	case name == ProgLB && n.lb != nil:
		c, err := n.lb.lb.Counters()
		if err != nil {
			return 0, fmt.Errorf("read counters of lb on %s: %w", n.at, err)
		}
		stats, sum = c.Stats, []string{"pass", "tx", "drop"}
	default:
		return 0, fmt.Errorf("chain on %s: %w: no %s loaded for it", n.at, ErrInvalid, name)
	}
	var total uint64
	for _, s := range sum {
		v, ok := stats[s]
		if !ok {
			return 0, fmt.Errorf("%s on %s has no counter %q", name, n.at, s)
		}
		total += v
	}
	return total, nil
}

// counters returns the counters of the chain's root and programs (the
// LB's aside), named "<program>.<counter>": "chain.packets" (the packets
// that entered the root) and the root's Stats, the Stats of ratelimit,
// connlimit's counters and "connlimit.count.<port>", the connections it
// counts as open on each limited port.
func (n *chainNode) counters() (map[string]uint64, error) {
	out := map[string]uint64{}
	put := func(prog string, m map[string]uint64) {
		for k, v := range m {
			out[prog+"."+k] = v
		}
	}
	cc, err := n.chain.Counters()
	if err != nil {
		return nil, err
	}
	put("chain", cc.Stats)
	out["chain.packets"] = cc.Packets()
	if n.rl != nil {
		c, err := n.rl.Counters()
		if err != nil {
			return nil, fmt.Errorf("read counters of ratelimit on %s: %w", n.at, err)
		}
		put(ProgRateLimit, c.Stats)
	}
	if n.cl != nil {
		c, err := n.cl.Counters()
		if err != nil {
			return nil, fmt.Errorf("read counters of connlimit on %s: %w", n.at, err)
		}
		put(ProgConnLimit, c)
		counts, err := n.cl.Counts()
		if err != nil {
			return nil, fmt.Errorf("read counts of connlimit on %s: %w", n.at, err)
		}
		for port, v := range counts {
			// A count below zero would be a bug of the program; shown
			// as a huge number it cannot pass a check by accident.
			out[ProgConnLimit+".count."+strconv.Itoa(int(port))] = uint64(v)
		}
	}
	return out, nil
}
