package ratelimit

import (
	"fmt"

	"github.com/sluice-dp/sluice/dataplane/internal/bpfenc"
)

// Scope counts the new connections one limit looked at.
type Scope struct {
	Seen     uint64
	Admitted uint64
	Refused  uint64
}

// RuleCounters are one rule's counters. Rule counts every new connection
// the rule matched; Aggregate and Source count those the rule's aggregate
// and per-source limits looked at. The source limit is checked first, so a
// connection it refuses is not seen by the aggregate limit.
type RuleCounters struct {
	Rule      Scope
	Aggregate Scope
	Source    Scope
}

// Counters are the program's counters summed over CPUs.
type Counters struct {
	// Stats maps each counter of the C enum rl_stat, named in lower case
	// without its RL_STAT_ prefix ("packets", "admitted", "pass_not_new",
	// "rst_sent"), to its total. The verdict counters pass, drop and tx
	// count every packet once.
	Stats map[string]uint64
	// Rules holds the counters of each rule of the active set.
	Rules map[Match]RuleCounters
}

// Counters reads every counter.
func (l *Limiter) Counters() (Counters, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	stats, err := bpfenc.ReadStats(l.objs.Stats, l.names)
	if err != nil {
		return Counters{}, err
	}
	c := Counters{Stats: stats, Rules: make(map[Match]RuleCounters, len(l.rules))}
	for m, in := range l.rules {
		var per []ratelimitRlRuleStats
		if err := l.objs.RuleStats.Lookup(in.id, &per); err != nil {
			return Counters{}, fmt.Errorf("read counters of rule %v: %w", m, err)
		}
		var rc RuleCounters
		for _, s := range per {
			rc.Rule.add(s.Rule.Seen, s.Rule.Admitted, s.Rule.Refused)
			rc.Aggregate.add(s.Aggregate.Seen, s.Aggregate.Admitted, s.Aggregate.Refused)
			rc.Source.add(s.Source.Seen, s.Source.Admitted, s.Source.Refused)
		}
		c.Rules[m] = rc
	}
	return c, nil
}

func (s *Scope) add(seen, admitted, refused uint64) {
	s.Seen += seen
	s.Admitted += admitted
	s.Refused += refused
}
