package scenario

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// chainState follows the chains through the steps while validating: which
// programs each chain holds after each event, and which it held
// throughout.
type chainState struct {
	d        *decoder
	sc       *Scenario
	lbIfaces map[Iface]bool
	// current is each chain's program list as the events so far left it.
	current map[Iface][]string
	// always holds the programs that were in every list of a chain so far.
	always map[Iface]map[string]bool
	// ever holds the programs a chain runs at some point of the run: the
	// ones the runner loads for it.
	ever map[Iface]map[string]bool
}

// counterPrograms are the prefixes of counter names that are not the
// LB's: "ratelimit.refused", "connlimit.tx_rst", "chain.packets".
var counterPrograms = []string{ProgRateLimit, ProgConnLimit, "chain"}

// validateChains checks chains: and the sections of the programs they
// run, and returns the state validateSteps continues with.
func validateChains(d *decoder, sc *Scenario, ifaceRef func(string, Iface) bool) *chainState {
	cs := &chainState{d: d, sc: sc, lbIfaces: map[Iface]bool{}, current: map[Iface][]string{},
		always: map[Iface]map[string]bool{}, ever: map[Iface]map[string]bool{}}
	if sc.LB != nil {
		for _, a := range sc.LB.Attach {
			cs.lbIfaces[a] = true
		}
	}
	for i, c := range sc.Chains {
		p := fmt.Sprintf("chains[%d]", i)
		if !ifaceRef(p+".attach", c.Attach) {
			continue
		}
		if _, dup := cs.current[c.Attach]; dup {
			d.failAt(d.line(p+".attach"), p+".attach", "%s has a chain already: one chain per interface", c.Attach)
			continue
		}
		cs.checkPrograms(p+".programs", c.Attach, c.Programs)
		cs.current[c.Attach] = c.Programs
		cs.always[c.Attach] = setOf(c.Programs)
		cs.ever[c.Attach] = setOf(c.Programs)
	}
	for _, st := range sc.Steps {
		for _, e := range st.Events {
			if e.Chain != nil && cs.ever[e.Chain.Attach] != nil {
				maps.Copy(cs.ever[e.Chain.Attach], setOf(e.Chain.Programs))
			}
		}
	}
	for _, x := range []struct {
		prog    string
		present bool
	}{{ProgRateLimit, sc.RateLimit != nil}, {ProgConnLimit, sc.ConnLimit != nil}} {
		if x.present && !slices.ContainsFunc(slices.Collect(maps.Values(cs.ever)), func(m map[string]bool) bool { return m[x.prog] }) {
			d.failAt(d.line(x.prog), x.prog, "no chain runs %s: list it in a chain's programs", x.prog)
		}
	}
	return cs
}

func setOf(list []string) map[string]bool {
	m := map[string]bool{}
	for _, s := range list {
		m[s] = true
	}
	return m
}

// checkPrograms checks a chain's program list: each program's section
// exists, and lb comes last, on an interface of lb.attach.
func (cs *chainState) checkPrograms(path string, at Iface, progs []string) {
	line := cs.d.line(path)
	for k, prog := range progs {
		pp := fmt.Sprintf("%s[%d]", path, k)
		switch prog {
		case ProgLB:
			if !cs.lbIfaces[at] {
				cs.d.failAt(line, pp, "the LB runs only on an interface of lb.attach, and %s is none", at)
			}
			if k != len(progs)-1 {
				cs.d.failAt(line, pp, "want lb last: it ends every packet's run and hands none on")
			}
		case ProgRateLimit:
			if cs.sc.RateLimit == nil {
				cs.d.failAt(line, pp, "needs the scenario's ratelimit: section")
			}
		case ProgConnLimit:
			if cs.sc.ConnLimit == nil {
				cs.d.failAt(line, pp, "needs the scenario's connlimit: section")
			}
		}
	}
}

// event checks a chain event and follows it.
func (cs *chainState) event(path string, c ChainSpec) {
	if _, ok := cs.current[c.Attach]; !ok {
		cs.d.failAt(cs.d.line(path+".attach"), path+".attach", "%s has no chain (chains: %s): want the interface of a chain", c.Attach, cs.chainList())
		return
	}
	cs.checkPrograms(path+".programs", c.Attach, c.Programs)
	cs.current[c.Attach] = c.Programs
	now := setOf(c.Programs)
	for p := range cs.always[c.Attach] {
		if !now[p] {
			delete(cs.always[c.Attach], p)
		}
	}
}

func (cs *chainState) chainList() string {
	var s []string
	for _, c := range cs.sc.Chains {
		s = append(s, c.Attach.String())
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// intact checks that chain_intact names a chain and programs that were in
// it from its start until now.
func (cs *chainState) intact(path string, c *ChainIntactCheck) {
	always, ok := cs.always[c.At]
	if !ok {
		cs.d.failAt(cs.d.line(path+".at"), path+".at", "%s has no chain (chains: %s)", c.At, cs.chainList())
		return
	}
	for k, p := range c.Programs {
		if !always[p] {
			cs.d.failAt(cs.d.line(path+".programs"), fmt.Sprintf("%s.programs[%d]", path, k),
				"%s was not in the chain at %s all the time until this step: want programs of every list the chain had", p, c.At)
		}
	}
}

// counters checks that each counter name belongs to a program the run
// has: the LB's names bare, the others prefixed with their program.
func (cs *chainState) counters(path string, c *CountersCheck, lbNodes map[string]bool, needLB func(string) bool) {
	lbNames := false
	for _, v := range c.Values {
		prog, _, found := strings.Cut(v.Name, ".")
		if !found {
			lbNames = true
			continue
		}
		if !slices.Contains(counterPrograms, prog) {
			vp := join(path+".values", v.Name)
			cs.d.failAt(cs.d.line(vp), vp, "%q: want an LB counter name without prefix, or one prefixed with %s.", prog, strings.Join(counterPrograms, "., "))
			continue
		}
		runs := false
		for at, ever := range cs.ever {
			if c.Node == "" || at.Node == c.Node {
				runs = runs || prog == "chain" || ever[prog]
			}
		}
		if !runs {
			where := ""
			if c.Node != "" {
				where = " on node " + c.Node
			}
			vp := join(path+".values", v.Name)
			cs.d.failAt(cs.d.line(vp), vp, "no chain%s runs %s", where, prog)
		}
	}
	if lbNames && needLB(path) && c.Node != "" && !lbNodes[c.Node] {
		cs.d.failAt(cs.d.line(path+".node"), path+".node", "%q: want a node the lb is attached to", c.Node)
	}
}

// minRateDuration is the shortest connect load admitted_rate measures:
// the first second is left out and at least one whole second must remain.
const minRateDuration = 2 * time.Second

func validateAdmittedRate(d *decoder, path string, st Step, c *AdmittedRateCheck, nodeRef func(string, string) bool) {
	fp := path + ".from"
	if !nodeRef(fp, c.From) {
		return
	}
	n := 0
	for j, l := range st.Connect {
		if l.From != c.From {
			continue
		}
		n++
		if l.Duration < minRateDuration {
			d.failAt(d.line(fp), fp, "connect[%d] from %s lasts %v: want at least %v, the rate is measured over the whole seconds after the first",
				j, c.From, l.Duration, minRateDuration)
		}
	}
	if n == 0 {
		d.failAt(d.line(fp), fp, "the step has no connect: from %s", c.From)
	}
}
