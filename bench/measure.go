package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
)

// Options tune a measurement. The zero value asks for the defaults.
type Options struct {
	// Repeat is the number of frames in one timed batch (one test-run
	// syscall). Large batches amortise the syscall and the kernel's setup
	// of the frame pool, which the kernel's figure leaves out anyway, and
	// smooth out timer ticks. Default DefaultRepeat.
	Repeat uint32 `json:"repeat"`
	// Samples is the number of timed batches per program; the report gives
	// their median. Default DefaultSamples.
	Samples int `json:"samples"`
	// BatchSize is how many frames the kernel runs before it flushes what
	// they transmitted; 0 leaves the kernel's default (64, NAPI's budget),
	// which is what a driver does too.
	BatchSize uint32 `json:"batch_size,omitempty"`
}

// Defaults for the zero fields of [Options]. With about 1 M frames a batch
// lasts 0.1 to 0.7 s on the development machine (empty XDP_DROP ≈ 0.09 s,
// XDP_TX ≈ 0.2 s, XDP_TX into a generic receiver ≈ 0.6 s): long enough for
// timer ticks to average out, short enough for a case to take seconds.
// Seven rounds give a median that one disturbed round cannot move.
const (
	DefaultRepeat  = 1 << 20
	DefaultSamples = 7
)

// maxBatchSize is TEST_XDP_MAX_BATCH in net/bpf/test_run.c.
const maxBatchSize = 256

func (o Options) withDefaults() (Options, error) {
	if o.Repeat == 0 {
		o.Repeat = DefaultRepeat
	}
	if o.Samples == 0 {
		o.Samples = DefaultSamples
	}
	if o.Samples < 0 {
		return o, fmt.Errorf("options: %d samples", o.Samples)
	}
	if o.BatchSize > maxBatchSize {
		return o, fmt.Errorf("options: batch size %d over the kernel's limit of %d", o.BatchSize, maxBatchSize)
	}
	return o, nil
}

// Stats summarises per-packet samples. Samples stay in round order, so the
// program's and the baseline's can be paired round by round.
type Stats struct {
	Median  float64   `json:"median"`
	Min     float64   `json:"min"`
	Max     float64   `json:"max"`
	Samples []float64 `json:"samples"`
}

func newStats(samples []float64) Stats {
	s := Stats{Samples: samples}
	if len(samples) == 0 {
		return s
	}
	sorted := slices.Sorted(slices.Values(samples))
	s.Min, s.Max = sorted[0], sorted[len(sorted)-1]
	if n := len(sorted); n%2 == 1 {
		s.Median = sorted[n/2]
	} else {
		s.Median = (sorted[n/2-1] + sorted[n/2]) / 2
	}
	return s
}

// Result is what one program's batches measured.
type Result struct {
	// NsPerPacket is the kernel's figure for each batch: the time in the
	// test-run loop divided by the frames run, which leaves out the
	// syscall, the frame pool's setup and time the thread was rescheduled
	// away. The kernel truncates it to whole nanoseconds.
	NsPerPacket Stats `json:"ns_per_packet"`
	// WallNsPerPacket is the elapsed time around each syscall divided by
	// the frames run. It is finer-grained but includes what the kernel's
	// figure leaves out: on the development machine (Linux 6.18) a fixed
	// 20 ms or so per syscall whatever the repeat count, plus whatever other
	// tasks took of the CPU. It is there to cross-check the kernel's figure,
	// which it always exceeds, not to be compared.
	WallNsPerPacket Stats `json:"wall_ns_per_packet"`
	// Packets is how many frames the timed batches ran.
	Packets uint64 `json:"packets"`
	// Delivered is how many frames reached the receiving end of the veth
	// during the timed batches: Packets for XDP_TX, 0 otherwise. Batches
	// a signal cut short and ran again add their partial frames.
	Delivered uint64 `json:"delivered"`
	// Interrupted counts batches a signal cut short and that were run
	// again.
	Interrupted int `json:"interrupted,omitempty"`
}

// Sentinel errors of a measurement that ran but cannot be trusted.
var (
	// ErrVerdict means the program did not return the verdict it was
	// expected to for the frame, so comparing it with that verdict's empty
	// program would compare different work.
	ErrVerdict = errors.New("unexpected verdict")
	// ErrNotDelivered means XDP_TX frames did not all reach the receiving
	// program, so the run timed the transmit's failure path.
	ErrNotDelivered = errors.New("transmitted frames not delivered")
)

// Measure times prog on frame with live frames, without a baseline. It
// reports absolute figures, which are only comparable with figures from the
// same run; [Compare] is the function that makes the comparison.
//
// The program is not attached to the lab's device: the test run calls it
// directly with the device as its ingress, and XDP_TX sends out of that
// device. On Linux 6.18 what has to be attached is the receiving program on
// the peer, in native mode or in generic mode with GRO on; tried without it,
// or in generic mode with GRO off, the run succeeds, takes less time, and
// delivers nothing. Attaching a program to the ingress device as well
// changed nothing.
func (l *Lab) Measure(prog *ebpf.Program, frame []byte, opts Options) (Result, error) {
	res, err := l.interleave(context.Background(), []*ebpf.Program{prog}, frame, opts, nil)
	if err != nil {
		return Result{}, err
	}
	return res[0], nil
}

// interleave measures progs round by round: each round runs one batch of
// every program, so slow drift of the machine (other tenants, frequency,
// thermal) lands on all of them alike. The order alternates between rounds
// (A B, B A, ...) so that neither side always runs right after the other.
// A discarded first round warms caches and the frame pool. round, if not
// nil, is called after each timed round with its 0-based index and each
// program's ns per packet in it.
func (l *Lab) interleave(ctx context.Context, progs []*ebpf.Program, frame []byte, opts Options, round func(int, []float64)) ([]Result, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if len(frame) == 0 {
		return nil, errors.New("measure: empty frame")
	}
	kernel := make([][]float64, len(progs))
	wall := make([][]float64, len(progs))
	res := make([]Result, len(progs))
	err = l.do(func() error {
		for r := -1; r < opts.Samples; r++ {
			if err := ctx.Err(); err != nil {
				return err
			}
			for k := range progs {
				i := k
				if r%2 == 1 {
					i = len(progs) - 1 - k
				}
				before, err := l.Delivered()
				if err != nil {
					return err
				}
				s, err := runLive(progs[i], frame, l.ifindex, opts.Repeat, opts.BatchSize)
				if err != nil {
					return err
				}
				after, err := l.Delivered()
				if err != nil {
					return err
				}
				if r < 0 {
					continue
				}
				kernel[i] = append(kernel[i], float64(s.kernelNs))
				wall[i] = append(wall[i], float64(s.wall.Nanoseconds())/float64(s.packets))
				res[i].Packets += s.packets
				res[i].Delivered += after - before
				res[i].Interrupted += s.interrupted
			}
			if r >= 0 && round != nil {
				last := make([]float64, len(progs))
				for i := range progs {
					last[i] = kernel[i][r]
				}
				round(r, last)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("measure in netns %s: %w", l.name, err)
	}
	for i := range res {
		res[i].NsPerPacket = newStats(kernel[i])
		res[i].WallNsPerPacket = newStats(wall[i])
	}
	return res, nil
}

// verdict runs prog repeat times on frame, without live frames, and
// returns what the last run decided. Live-frames runs do not report the
// verdict.
func (l *Lab) verdict(prog *ebpf.Program, frame []byte, repeat uint32) (Verdict, error) {
	var ret uint32
	err := l.do(func() error {
		var err error
		ret, err = prog.Run(&ebpf.RunOptions{
			Data:    frame,
			Repeat:  repeat,
			Context: xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: uint32(l.ifindex)},
		})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("test run in netns %s: %w", l.name, err)
	}
	return Verdict(ret), nil
}
