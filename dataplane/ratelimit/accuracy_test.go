package ratelimit

import (
	"fmt"
	"math"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/internal/pkttest"
	"github.com/sluice-dp/sluice/internal/testenv"
)

// Accuracy at steady load: two workers pinned to two CPUs offer SYNs at a
// multiple of the rate for a few windows with BPF_PROG_RUN, and the SYNs
// the program admitted are counted per window of the clock the program
// reads. Under a steady offered load above the rate, the sliding-window
// rule admits rate × window per window (the estimate reaches the budget
// exactly as the window ends), so every whole window's count must be
// within 5% of it. This checks a count, not a duration: the offered load
// only has to stay above the rate, which it does with a wide margin.
//
// The load must really be steady, also near the end of each window where
// the last admissions happen, while other work competes for the two CPUs:
// the workers run at a real-time priority and sleep in the kernel until
// each SYN is due. A window in which they still fell behind so far that
// the load was not clearly above the rate (fewer than 1.5 × rate × window
// SYNs offered, or fewer than 0.15 × rate × window in its last tenth,
// where the last admissions of a window happen) is left out and reported.
//
// The errors it logs are the ones docs/policing.md records:
//
//	go test -count=1 -v -run TestSteadyStateAccuracy ./dataplane/ratelimit/
func TestSteadyStateAccuracy(t *testing.T) {
	testenv.RequirePriv(t)
	// Like every timing figure, the offered load means nothing under
	// emulation: a TCG guest cannot keep it steady, and the algorithm's
	// accuracy does not depend on the kernel version.
	testenv.SkipUnless(t, os.Getenv("SLUICE_GUEST") != "1", "steady-load accuracy is measured on the host kernel, not in a kernel-matrix guest")
	if runtime.NumCPU() < 2 {
		t.Fatalf("needs two CPUs to measure the shared count, has %d", runtime.NumCPU())
	}
	const (
		rate     = 1000
		window   = 250 * time.Millisecond
		duration = 2 * time.Second
		budget   = rate * window / time.Second
	)
	// A worker back from a syscall needs a free P at once: with only
	// GOMAXPROCS=2 it may wait for a thread without real-time priority.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(8))
	web := Match{Port: 80, Proto: l4.TCP}
	dst := netip.AddrPortFrom(vip4, 80)
	cases := []struct {
		name   string
		rule   Rule
		factor int
		// Source of each worker's SYNs.
		sources [2]netip.AddrPort
	}{
		{"aggregate 2x", Rule{Rate: rate}, 2,
			[2]netip.AddrPort{client4, netip.MustParseAddrPort("203.0.113.9:5000")}},
		{"aggregate 10x", Rule{Rate: rate}, 10,
			[2]netip.AddrPort{client4, netip.MustParseAddrPort("203.0.113.9:5000")}},
		{"one source from two cpus 10x", Rule{SourceRate: rate}, 10,
			[2]netip.AddrPort{client4, client4}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := c.rule
			r.Match, r.Window = web, window
			var counts []int
			// A run in which the machine stalled the workers for too many
			// windows is run again once, on a fresh rule.
			for attempt := 0; attempt < 2 && len(counts) < 3; attempt++ {
				l := newLimiter(t, r)
				sources := [2][]byte{syn(c.sources[0], dst), syn(c.sources[1], dst)}
				counts = steadyWindows(t, l, sources, float64(rate*c.factor), float64(budget), installedRule(t, l, web).epoch, window, duration)
				if t.Failed() {
					return
				}
			}
			if len(counts) < 3 {
				t.Fatalf("only %d windows at steady load: the workers could not keep up", len(counts))
			}
			worst, sum := 0.0, 0
			for i, n := range counts {
				sum += n
				e := float64(n-int(budget)) / float64(budget)
				worst = max(worst, math.Abs(e))
				if math.Abs(e) > 0.05 {
					t.Errorf("window %d admitted %d, want %d ± 5%%", i, n, budget)
				}
			}
			mean := float64(sum)/float64(len(counts))/float64(budget) - 1
			t.Logf("%s: rate %d/s, window %v, offered %dx from 2 CPUs: %d whole windows, mean error %+.2f%%, worst window %.2f%%",
				c.name, rate, window, c.factor, len(counts), 100*mean, 100*worst)
		})
	}
}

// steadyWindows offers frames[cpu] from CPUs 0 and 1 together, perSecond in
// all, for d, to a limit of budget per window (windows counted from epoch),
// and returns the number of SYNs admitted in each whole window
// after the first (which started before the load did) that was at steady
// load.
func steadyWindows(t *testing.T, l *Limiter, frames [2][]byte, perSecond, budget float64, epoch uint64, window, d time.Duration) []int {
	t.Helper()
	start := clock(t)
	var admitted, offered [2][]uint64
	t.Run("workers", func(t *testing.T) {
		for cpu := range 2 {
			t.Run(fmt.Sprint("cpu", cpu), func(t *testing.T) {
				t.Parallel()
				testenv.LockCPU(t, cpu)
				realtime(t)
				admitted[cpu], offered[cpu] = offer(t, l, frames[cpu], start, perSecond/2, d)
			})
		}
	})
	w := uint64(window.Nanoseconds())
	perWindow, offeredPerWindow, offeredTail := map[uint64]int{}, map[uint64]int{}, map[uint64]int{}
	for cpu := range admitted {
		for _, at := range admitted[cpu] {
			perWindow[(at-epoch)/w]++
		}
		for _, at := range offered[cpu] {
			offeredPerWindow[(at-epoch)/w]++
			if (at-epoch)%w >= w-w/10 {
				offeredTail[(at-epoch)/w]++
			}
		}
	}
	var counts []int
	for i := (start-epoch)/w + 1; i < (start-epoch+uint64(d.Nanoseconds()))/w; i++ {
		if n, tail := offeredPerWindow[i], offeredTail[i]; float64(n) < 1.5*budget || float64(tail) < 0.15*budget {
			t.Logf("a window left out: %d SYNs offered (%d in its last tenth) for a budget of %.0f", n, tail, budget)
			continue
		}
		counts = append(counts, perWindow[i])
	}
	return counts
}

// offer runs frame at perSecond from start until start+d and returns the
// clock readings (CLOCK_MONOTONIC, just before each run) of the runs the
// program admitted, and of all runs. After a stall it resumes the pace
// from the current time instead of sending the missed SYNs in a burst.
func offer(t *testing.T, l *Limiter, frame []byte, start uint64, perSecond float64, d time.Duration) (admitted, offered []uint64) {
	t.Helper()
	end := start + uint64(d.Nanoseconds())
	interval := float64(time.Second) / perSecond
	// Nothing is allocated per SYN (pkttest.Run decodes every output), so
	// that the garbage collector, whose workers do not run at real-time
	// priority, has nothing to stall the workers for.
	n := int(d.Seconds()*perSecond) + 1
	admitted, offered = make([]uint64, 0, n), make([]uint64, 0, n)
	opts := &ebpf.RunOptions{Data: frame, Repeat: 1}
	for i := 0; ; i++ {
		due := start + uint64(float64(i)*interval)
		if now := clock(t); now > due+uint64(time.Millisecond) {
			i = int(float64(now-start) / interval)
			due = start + uint64(float64(i)*interval)
		}
		if due >= end {
			return admitted, offered
		}
		now := clock(t)
		if now < due {
			ts := unix.NsecToTimespec(int64(due))
			if err := unix.ClockNanosleep(unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME, &ts, nil); err != nil && err != unix.EINTR {
				t.Fatalf("sleep: %v", err)
			}
			now = clock(t)
		}
		offered = append(offered, now)
		ret, err := l.Program().Run(opts)
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		switch v := pkttest.Verdict(ret); v {
		case pkttest.XDPPass:
			admitted = append(admitted, now)
		case pkttest.XDPDrop:
		default:
			t.Fatalf("verdict %v, want pass or drop", v)
		}
	}
}

// realtime runs the calling thread (locked by testenv.LockCPU) at the
// lowest real-time priority until the test ends, so that the load it
// offers keeps its pace when other processes want the CPU. It sleeps
// between SYNs, so it leaves the CPU to others most of the time.
func realtime(t *testing.T) {
	t.Helper()
	old, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		t.Fatalf("read scheduling policy: %v", err)
	}
	rt := *old
	rt.Policy, rt.Priority = unix.SCHED_FIFO, 1
	if err := unix.SchedSetAttr(0, &rt, 0); err != nil {
		t.Fatalf("set real-time policy: %v", err)
	}
	// Registered after LockCPU's cleanup, so it runs before it, while the
	// thread is still this goroutine's.
	t.Cleanup(func() {
		if err := unix.SchedSetAttr(0, old, 0); err != nil {
			t.Errorf("restore scheduling policy: %v", err)
		}
	})
}
