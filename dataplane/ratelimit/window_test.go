package ratelimit

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/internal/pkttest"
)

// estimateAdmits is the rule, written independently of the
// program: with el the time since the state's window began, roll the
// windows over as time demands, then admit when
// prev × (1 − elapsed/window) + cur < limit. A clock reading before the
// state's window began (another CPU moved the state on after this one read
// the clock) counts at its start.
func estimateAdmits(el, window float64, prev, cur, limit float64) bool {
	el = max(el, 0)
	switch {
	case el >= 2*window:
		prev, cur, el = 0, 0, el-2*window
	case el >= window:
		prev, cur, el = cur, 0, el-window
	}
	return prev*(1-el/window)+cur < limit
}

// Window edges, for the aggregate and the per-source limit: the rule's
// windows are moved so that now is a chosen fraction into one, a state is
// written with chosen counts for this window or an earlier or later one,
// and one SYN runs. The expected verdict comes from estimateAdmits at the
// earliest and the latest moment the program can have read the clock;
// cases keep away from the exact crossing so that both agree. A refusal
// leaves the state as it was; an admission writes it rolled over, plus one.
func TestWindowEdges(t *testing.T) {
	// Now is in the rule's first window (index 0), so that the epoch is
	// never before the clock's zero, also just after a guest's boot; the
	// windows before it have indexes 2^20 − 1 and − 2, as the index is
	// kept modulo 2^20.
	// A long window keeps "just before the edge" (5% of it) hundreds of
	// milliseconds away from the edge, also on a slow, busy machine.
	const (
		limit  = 100 // connections per window
		window = 10 * time.Second
		rate   = limit / 10 // per second
	)
	w := uint64(window.Nanoseconds())
	// The rule's epoch goes up to a window before now, and the program
	// reads an epoch after its clock as "no time elapsed": just after a
	// guest's boot, wait until the clock has run a window.
	if now := clock(t); now < w {
		time.Sleep(time.Duration(w-now) + 10*time.Millisecond)
	}
	web := Match{Port: 80, Proto: l4.TCP}
	src := netip.PrefixFrom(client4.Addr(), 32)
	cases := []struct {
		name      string
		frac      float64 // how far now is into its window
		back      int64   // the state's window is this many windows before now's
		prev, cur uint64
	}{
		{"mid window, just under", 0.5, 0, 100, 49},
		{"mid window, over", 0.5, 0, 100, 51},
		{"early, previous weighs", 0.1, 0, 100, 9},
		{"early, previous refuses", 0.1, 0, 100, 11},
		{"late, previous fades", 0.9, 0, 100, 89},
		{"late, over", 0.9, 0, 100, 91},
		{"estimate equal to the rate refuses", 0.3, 0, 0, 100},
		{"one under the rate admits", 0.3, 0, 0, 99},
		{"just before the edge", 0.95, 0, 100, 99},
		{"just before the edge, full", 0.95, 0, 100, 100},
		{"just after the edge", 0.05, 1, 7, 100},
		{"rollover carries the count", 0.2, 1, 3, 60},
		{"two windows idle forget everything", 0.5, 2, 100, 100},
		{"clock read before another cpu's rollover", 0.5, -1, 60, 30},
		{"clock read before another cpu's rollover, over", 0.5, -1, 60, 41},
	}
	scopes := []struct {
		name string
		rule Rule
		get  func(t *testing.T, l *Limiter) windowState
		set  func(t *testing.T, l *Limiter, s windowState)
	}{
		{"aggregate", Rule{Rate: rate},
			func(t *testing.T, l *Limiter) windowState { return getAggregate(t, l, web) },
			func(t *testing.T, l *Limiter, s windowState) { setAggregate(t, l, web, s) }},
		{"source", Rule{SourceRate: rate},
			func(t *testing.T, l *Limiter) windowState {
				s, ok := getSource(t, l, web, src)
				if !ok {
					t.Fatalf("source state gone")
				}
				return s
			},
			func(t *testing.T, l *Limiter, s windowState) { setSource(t, l, web, src, s) }},
	}
	frame := syn(client4, netip.AddrPortFrom(vip4, 80))
	for _, sc := range scopes {
		r := sc.rule
		r.Match, r.Window = web, window
		l := newLimiter(t, r)
		for _, c := range cases {
			t.Run(sc.name+"/"+c.name, func(t *testing.T) {
				state := windowState{idx: uint64(-c.back) & (1<<idxBits - 1), prev: c.prev, cur: c.cur}
				sc.set(t, l, state)
				epoch := clock(t) - uint64(c.frac*float64(w))
				setEpoch(t, l, web, epoch)
				stateStart := int64(epoch) - c.back*int64(w)
				lo := float64(int64(clock(t)) - stateStart)
				res := pkttest.Run(t, l.Program(), frame)
				hi := float64(int64(clock(t)) - stateStart)

				admit := estimateAdmits(lo, float64(w), float64(c.prev), float64(c.cur), limit)
				if admit != estimateAdmits(hi, float64(w), float64(c.prev), float64(c.cur), limit) ||
					int64(lo)/int64(w) != int64(hi)/int64(w) {
					t.Fatalf("bad case: the outcome changes between %.6f and %.6f windows", lo/float64(w), hi/float64(w))
				}
				want, wantState := pkttest.XDPDrop, state
				if admit {
					want = pkttest.XDPPass
					switch {
					case c.back >= 2:
						wantState = windowState{cur: 1}
					case c.back == 1:
						wantState = windowState{prev: c.cur, cur: 1}
					default:
						wantState.cur++
					}
				}
				if res.Verdict != want {
					t.Errorf("verdict %v, want %v (%.4f windows into the state's window)", res.Verdict, want, lo/float64(w))
				}
				if got := sc.get(t, l); got != wantState {
					t.Errorf("state after %+v, want %+v", got, wantState)
				}
			})
		}
	}
}
