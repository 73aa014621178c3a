package chain

import (
	"fmt"

	"github.com/sluice-dp/sluice/dataplane/internal/bpfenc"
)

// Counters are the root's counters summed over CPUs.
type Counters struct {
	// Stats maps each counter of the C enum chain_stat, named in lower
	// case without its CHAIN_STAT_ prefix, to its total: "empty" (packets
	// passed because the active chain had no member), "tail_call_failed"
	// (packets passed because the first member of a non-empty chain was
	// missing; always 0 unless the program array was changed behind the
	// Chain's back) and "bad_region".
	Stats map[string]uint64
	// Regions counts the packets that entered the root, per region of the
	// program array they ran in.
	Regions [Generations]uint64
}

// Packets is the number of packets that entered the root.
func (c Counters) Packets() uint64 {
	var n uint64
	for _, r := range c.Regions {
		n += r
	}
	return n
}

// Counters reads the root's counters.
func (c *Chain) Counters() (Counters, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return Counters{}, fmt.Errorf("read chain %s counters: %w", c.name, ErrClosed)
	}
	stats, err := bpfenc.ReadStats(c.maps.ChainStats, c.names)
	if err != nil {
		return Counters{}, fmt.Errorf("read chain %s counters: %w", c.name, err)
	}
	out := Counters{Stats: stats}
	for r := range uint32(Generations) {
		if out.Regions[r], err = bpfenc.SumPerCPU(c.maps.ChainRegionPackets, r); err != nil {
			return Counters{}, fmt.Errorf("read chain %s packets of region %d: %w", c.name, r, err)
		}
	}
	return out, nil
}
