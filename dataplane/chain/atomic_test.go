package chain

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/internal/pkttest"
)

// TestSwitchUnderTraffic proves that switching chains skips no program that
// is in both the old and the new chain. Threads pinned to each CPU run test
// frames through the root without pause while the test switches, hundreds of
// times, among chains that all hold members m0 and m1 in varying order,
// with other members added and removed around them. Every output frame must
// carry exactly the record of one whole configured chain (so m0 and m1 both
// ran, and no packet mixed two chains), and the root, m0 and m1 must each
// have counted every packet. It runs for XDP and for TC, whose test runs
// differ: a TC test run may be preempted, so there is one thread per CPU,
// which keeps two runs of the chain from interleaving on a CPU.
func TestSwitchUnderTraffic(t *testing.T) {
	for _, hook := range []Hook{XDP, TCIngress} {
		t.Run(hook.String(), func(t *testing.T) { switchUnderTraffic(t, hook) })
	}
}

func switchUnderTraffic(t *testing.T, hook Hook) {
	const switches = 300
	c := newChain(t, hook)
	m := loadMembers(t, hook, c)
	frame := testFrame(t)
	pass := verdicts[hook]["pass"]

	rng := rand.New(rand.NewPCG(5, 7))
	var chains [][]string
	allowed := map[string]bool{}
	for len(chains) < 32 {
		others := []string{"m2", "m3", "m4", "m5", "m6", "m7"}
		rng.Shuffle(len(others), func(i, j int) { others[i], others[j] = others[j], others[i] })
		chain := append([]string{"m0", "m1"}, others[:rng.IntN(len(others)+1)]...)
		rng.Shuffle(len(chain), func(i, j int) { chain[i], chain[j] = chain[j], chain[i] })
		chains = append(chains, chain)
		allowed[string(marked(frame, m.idsOf(chain...)...))] = true
	}
	if err := c.Set(m.list(chains[0]...)); err != nil {
		t.Fatalf("set first chain: %v", err)
	}
	cpus := allowedCPUs(t)
	if len(cpus) > 2 {
		cpus = cpus[:2]
	}
	before, seenBefore := counters(t, c), m.seenTotals(t)

	var (
		stop    atomic.Bool
		wg      sync.WaitGroup
		runs    = make([]atomic.Uint64, len(cpus))
		bad     atomic.Uint64
		badOnce sync.Once
		seenMu  sync.Mutex
		outputs = map[string]bool{}
	)
	for i, cpu := range cpus {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := pinThread(cpu); err != nil {
				t.Errorf("pin to cpu %d: %v", cpu, err)
				return
			}
			local := map[string]bool{}
			buf := make([]byte, len(frame)+256)
			for !stop.Load() {
				ro := ebpf.RunOptions{Data: frame, DataOut: buf, Repeat: 1}
				ret, err := c.Program().Run(&ro)
				if err != nil {
					t.Errorf("cpu %d: run: %v", cpu, err)
					return
				}
				runs[i].Add(1)
				out := ro.DataOut
				if int32(ret) != pass || !allowed[string(out)] {
					bad.Add(1)
					badOnce.Do(func() {
						t.Errorf("cpu %d: verdict %s or a frame that matches no configured chain:\n% x", cpu, verdictName(hook, int32(ret)), out)
					})
				}
				local[string(out)] = true
			}
			seenMu.Lock()
			for o := range local {
				outputs[o] = true
			}
			seenMu.Unlock()
		}()
	}
	// Switch only once every thread runs traffic, so that switches and
	// packets overlap.
	for i := range runs {
		for runs[i].Load() == 0 && !t.Failed() {
			runtime.Gosched()
		}
	}
	startRuns := total(runs)
	for k := 1; k <= switches && !t.Failed(); k++ {
		if err := c.Set(m.list(chains[k%len(chains)]...)); err != nil {
			t.Errorf("switch %d: %v", k, err)
		}
	}
	duringSwitches := total(runs) - startRuns
	stop.Store(true)
	wg.Wait()

	n := total(runs)
	if bad.Load() != 0 {
		t.Errorf("%d of %d packets did not run one whole configured chain", bad.Load(), n)
	}
	if duringSwitches == 0 {
		t.Errorf("no packet ran while the chain was switched: the test proved nothing")
	}
	if len(outputs) < 2 {
		t.Errorf("packets came out of %d distinct chains, want several: the switches did not reach the traffic", len(outputs))
	}
	after, seenAfter := counters(t, c), m.seenTotals(t)
	if d := after.Packets() - before.Packets(); d != n {
		t.Errorf("root counted %d packets, the threads ran %d", d, n)
	}
	for _, id := range []int{0, 1} {
		if d := seenAfter[id] - seenBefore[id]; d != n {
			t.Errorf("member m%d counted %d packets, the threads ran %d", id, d, n)
		}
	}
	pkttest.ExpectDeltas(t, before.Stats, after.Stats, map[string]uint64{})
	t.Logf("%d packets on %d cpus, %d during %d switches, %d distinct chains seen", n, len(cpus), duringSwitches, switches, len(outputs))
}

func total(runs []atomic.Uint64) uint64 {
	var n uint64
	for i := range runs {
		n += runs[i].Load()
	}
	return n
}

// allowedCPUs lists the CPUs this process may run on.
func allowedCPUs(t *testing.T) []int {
	t.Helper()
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatalf("read cpu affinity: %v", err)
	}
	var cpus []int
	for cpu := range 1024 {
		if set.IsSet(cpu) {
			cpus = append(cpus, cpu)
		}
	}
	return cpus
}

// pinThread locks the calling goroutine to its thread and the thread to
// cpu, for good: when the goroutine ends, the runtime retires the locked
// thread, so the narrowed affinity never reaches another goroutine.
// (testenv.LockCPU undoes its pinning in t.Cleanup on the test goroutine,
// so it cannot pin worker goroutines.)
func pinThread(cpu int) error {
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("set affinity: %w", err)
	}
	return nil
}
