package bench

import (
	"errors"
	"fmt"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// liveFrames is BPF_F_TEST_XDP_LIVE_FRAMES: every iteration starts from the
// original frame and the verdict really happens (XDP_TX transmits, XDP_PASS
// enters the stack), which is what makes repeat > 1 meaningful for programs
// that rewrite the packet.
const liveFrames = 1 << 1

// xdpMD mirrors struct xdp_md, the context a live-frames run needs: the
// kernel refuses live frames without one, and resolves IngressIfindex in the
// calling thread's network namespace.
type xdpMD struct {
	Data           uint32
	DataEnd        uint32
	DataMeta       uint32
	IngressIfindex uint32
	RxQueueIndex   uint32
	EgressIfindex  uint32
}

// testRunAttr is the BPF_PROG_TEST_RUN member of union bpf_attr. The
// addresses are unsafe.Pointer rather than uint64 so the garbage collector
// keeps the buffers alive and knows the attr refers to them; that makes the
// layout right on 64-bit platforms only, which the assertions below enforce.
type testRunAttr struct {
	progFD      uint32
	retval      uint32
	dataSizeIn  uint32
	dataSizeOut uint32
	dataIn      unsafe.Pointer
	dataOut     unsafe.Pointer
	repeat      uint32
	duration    uint32
	ctxSizeIn   uint32
	ctxSizeOut  uint32
	ctxIn       unsafe.Pointer
	ctxOut      unsafe.Pointer
	flags       uint32
	cpu         uint32
	batchSize   uint32
	_           uint32
}

// The kernel's layout is 80 bytes; either array length goes negative, and
// the build fails, if testRunAttr is anything else.
var (
	_ [unsafe.Sizeof(testRunAttr{}) - 80]byte
	_ [80 - unsafe.Sizeof(testRunAttr{})]byte
)

// sample is one live-frames batch.
type sample struct {
	// kernelNs is the kernel's own per-packet figure: the timed loop only,
	// without the syscall, the setup of the frame pool, or time the thread
	// spent rescheduled. The kernel truncates it to whole nanoseconds.
	kernelNs uint32
	// wall is the elapsed time around the syscall, for sub-nanosecond
	// resolution and as a cross-check of kernelNs.
	wall time.Duration
	// packets is how many frames the completed attempt ran.
	packets uint64
	// interrupted counts attempts that a signal cut short before the one
	// that completed; their frames were transmitted (an unknown number),
	// but the kernel reports no time for them.
	interrupted int
}

// maxInterrupts bounds the retries after EINTR: a steady stream of signals
// would otherwise make a batch retry forever.
const maxInterrupts = 10

// runLive runs prog repeat times in live-frames mode on the device with the
// given ifindex. The calling goroutine must be locked to an OS thread that is
// in the device's network namespace.
//
// cilium/ebpf's Program.Run does not return the kernel's duration (v0.22
// RunOptions has no such field, and Program.Benchmark takes no flags or
// context), so the syscall is issued here directly.
func runLive(prog *ebpf.Program, frame []byte, ifindex int, repeat, batchSize uint32) (sample, error) {
	if len(frame) < 14 {
		return sample{}, fmt.Errorf("frame of %d bytes: shorter than an Ethernet header", len(frame))
	}
	if repeat == 0 {
		return sample{}, errors.New("repeat must be at least 1")
	}
	// Private copies: the kernel reads them while the syscall runs, and a
	// caller's buffer could otherwise be changed underneath it.
	data := append(make([]byte, 0, len(frame)), frame...)
	ctx := &xdpMD{DataEnd: uint32(len(data)), IngressIfindex: uint32(ifindex)}
	attr := &testRunAttr{
		progFD:     uint32(prog.FD()),
		dataSizeIn: uint32(len(data)),
		dataIn:     unsafe.Pointer(&data[0]),
		repeat:     repeat,
		ctxSizeIn:  uint32(unsafe.Sizeof(*ctx)),
		ctxIn:      unsafe.Pointer(ctx),
		flags:      liveFrames,
		batchSize:  batchSize,
	}
	var s sample
	for {
		start := time.Now()
		_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(attr)), unsafe.Sizeof(*attr))
		s.wall = time.Since(start)
		if errno == 0 {
			break
		}
		if errno != unix.EINTR {
			return s, fmt.Errorf("bpf_prog_test_run with live frames on ifindex %d: %w", ifindex, errno)
		}
		// The kernel gives up the whole batch on a pending signal; the
		// frames it had sent are gone and uncounted, so the only honest
		// thing is to run the batch again.
		s.interrupted++
		if s.interrupted > maxInterrupts {
			return s, fmt.Errorf("bpf_prog_test_run with live frames on ifindex %d: interrupted %d times: %w", ifindex, s.interrupted, errno)
		}
	}
	// attr.retval is not the program's verdict in live-frames mode (the
	// kernel leaves it 0), which is why Lab.verdict checks it separately.
	s.packets = uint64(repeat)
	s.kernelNs = attr.duration
	return s, nil
}
