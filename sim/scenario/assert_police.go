package scenario

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// This file holds the assertions about connection loads and chains:
// admitted_rate, connections and chain_intact.

// admittedRate measures the rate at which the step's connect loads from
// c.From completed connections: the connections completed by the attempts
// started in seconds 1 to W−1 of the loads (counted from their common
// start), divided by W−1, where W is the number of whole seconds the
// shortest of them lasted. Second 0 is left out: a sliding window starts
// it with the budget of a whole window unspent.
func admittedRate(c *AdmittedRateCheck, data *stepData, res *AssertionResult) {
	res.Name = fmt.Sprintf("connections from %s complete at %g a second, within %.1f%%", c.From, c.Rate, 100*c.Tolerance)
	var loads []connOutcome
	whole := math.MaxInt
	for _, o := range data.conns {
		if o.load != nil && o.from == c.From {
			loads = append(loads, o)
			whole = min(whole, int(o.load.Duration/time.Second))
		}
	}
	if len(loads) == 0 || whole < 2 {
		res.Observed = fmt.Sprintf("no connect load from %s lasting two whole seconds", c.From)
		return
	}
	okPer := make([]int, whole)
	triedPer := make([]int, whole)
	for _, o := range loads {
		for s := range whole {
			if s < len(o.res.PerSecond) {
				okPer[s] += o.res.OKPerSecond[s]
				triedPer[s] += o.res.PerSecond[s]
			}
		}
	}
	var ok, tried int
	for s := 1; s < whole; s++ {
		ok += okPer[s]
		tried += triedPer[s]
	}
	secs := float64(whole - 1)
	rate := float64(ok) / secs
	res.Passed = math.Abs(rate-c.Rate) <= c.Tolerance*c.Rate
	res.Observed = fmt.Sprintf("%.1f/s completed of %.1f/s attempted over seconds 1 to %d (second 0 completed %d of %d; per second from 1: %v)",
		rate, float64(tried)/secs, whole-1, okPer[0], triedPer[0], okPer[1:])
}

// connections compares the outcomes of the step's connect and hold
// attempts from c.From with the expected counts.
func connections(c *ConnectionsCheck, data *stepData, res *AssertionResult) {
	var ok, refused, timeout, failed, attempts int
	errs := map[string]int{}
	for _, o := range data.conns {
		if o.from != c.From {
			continue
		}
		attempts += o.res.Attempts
		ok += o.res.OK
		refused += o.res.Refused
		timeout += o.res.Timeout
		failed += o.res.Failed
		for k, v := range o.res.Errors {
			errs[k] += v
		}
	}
	var want, got []string
	res.Passed = true
	for _, x := range []struct {
		name string
		want *int
		got  int
	}{{"ok", c.OK, ok}, {"refused", c.Refused, refused}, {"timeout", c.Timeout, timeout}, {"failed", c.Failed, failed}} {
		mark := ""
		if x.want != nil {
			want = append(want, fmt.Sprintf("%s %d", x.name, *x.want))
			if *x.want != x.got {
				res.Passed, mark = false, " ✗"
			}
		}
		got = append(got, fmt.Sprintf("%s %d%s", x.name, x.got, mark))
	}
	res.Name = fmt.Sprintf("connection attempts from %s: %s", c.From, strings.Join(want, ", "))
	res.Observed = fmt.Sprintf("%d attempts: %s", attempts, strings.Join(got, ", "))
	if len(errs) > 0 {
		var kinds []string
		for _, k := range slices.Sorted(maps.Keys(errs)) {
			kinds = append(kinds, fmt.Sprintf("%d× %s", errs[k], k))
		}
		res.Observed += "; failures: " + strings.Join(kinds, ", ")
	}
}

// intactTries bounds how often chainIntact reads the counters again when
// a packet crossed the chain while it read them.
const intactTries = 10

// chainIntact compares the packets that entered a chain's root with the
// packets each listed program ran on, all counted since the chain was
// built. Every program loaded for a chain runs only in it, so the counts
// are equal exactly when no packet skipped the program: which holds when
// the program was in every list the chain had (the schema checks that)
// and no program before it ended a packet's run early (a refusal).
func (r *runner) chainIntact(c *ChainIntactCheck, res *AssertionResult) error {
	res.Name = fmt.Sprintf("every packet that entered the chain at %s ran through %s", c.At, strings.Join(c.Programs, ", "))
	i := slices.IndexFunc(r.w.chains, func(n *chainNode) bool { return n.at == c.At })
	if i < 0 {
		return fmt.Errorf("%w: no chain on %s", ErrInvalid, c.At)
	}
	n := r.w.chains[i]
	var root uint64
	var regions []uint64
	got := make([]uint64, len(c.Programs))
	// Counters read while a packet crosses the chain disagree by that
	// packet: read again until the root's count held still around them.
	for range intactTries {
		before, err := n.chain.Counters()
		if err != nil {
			return err
		}
		for k, p := range c.Programs {
			if got[k], err = n.processed(p); err != nil {
				return err
			}
		}
		after, err := n.chain.Counters()
		if err != nil {
			return err
		}
		root = after.Packets()
		regions = nil
		for _, x := range after.Regions {
			if x > 0 {
				regions = append(regions, x)
			}
		}
		if before.Packets() == root {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	res.Passed = root > 0
	parts := make([]string, len(c.Programs))
	for k, p := range c.Programs {
		mark := ""
		if got[k] != root {
			res.Passed, mark = false, " ✗"
		}
		parts[k] = fmt.Sprintf("%s %d%s", p, got[k], mark)
	}
	// The root counts packets per region of its program array, and each
	// list the chain had took the next region: the packets each version
	// of the chain ran on (a region reused after chain.Generations
	// changes adds up).
	res.Observed = fmt.Sprintf("%d packets entered the chain (by chain version: %v); ran on them: %s", root, regions, strings.Join(parts, ", "))
	return nil
}
