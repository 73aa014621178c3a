package agent

import (
	"fmt"

	"github.com/sluice-dp/sluice/dataplane/internal/bpfenc"
)

// Counters are the programs' counters summed over CPUs.
type Counters struct {
	// Stats maps each counter of the C enum agent_stat, named in lower case
	// without its AGENT_STAT_ prefix ("deliver_local", "drop_unknown_vip"),
	// to its total. On egress the verdicts pass, deliver_local,
	// deliver_transparent and drop count every packet once, and each drop
	// also counts exactly one drop_* reason, each pass one pass_* reason;
	// on ingress reply_pass, reply_rewritten and reply_drop do the same.
	Stats map[string]uint64
	// Connections is the number of entries in the connection table, expired
	// ones that nothing has removed yet included.
	Connections int
}

// Counters reads every counter and counts the connection table's entries.
func (a *Agent) Counters() (Counters, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	stats, err := bpfenc.ReadStats(a.objs.Stats, a.names)
	if err != nil {
		return Counters{}, err
	}
	c := Counters{Stats: stats}
	var (
		k agentConnKey
		v agentConnState
	)
	it := a.objs.Conns.Iterate()
	for it.Next(&k, &v) {
		c.Connections++
	}
	if err := it.Err(); err != nil {
		return Counters{}, fmt.Errorf("count connections: %w", err)
	}
	return c, nil
}
