package pkttest

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Verdict is an XDP program's return value. It has its own type so that a
// failing comparison prints XDP_PASS rather than 2.
type Verdict uint32

// XDP actions, as in the kernel's enum xdp_action.
const (
	XDPAborted  Verdict = 0
	XDPDrop     Verdict = 1
	XDPPass     Verdict = 2
	XDPTX       Verdict = 3
	XDPRedirect Verdict = 4
)

// String returns the kernel's name for the action, or the number for a
// value the kernel does not define (and treats as aborted).
func (v Verdict) String() string {
	switch v {
	case XDPAborted:
		return "XDP_ABORTED"
	case XDPDrop:
		return "XDP_DROP"
	case XDPPass:
		return "XDP_PASS"
	case XDPTX:
		return "XDP_TX"
	case XDPRedirect:
		return "XDP_REDIRECT"
	}
	return fmt.Sprintf("XDP_UNKNOWN(%d)", uint32(v))
}

// TCAction is a TC (sched_cls) program's return value. TC reuses small
// numbers with other meanings (0 is TC_ACT_OK, not "aborted"), so TC tests
// compare Result.TC() against these rather than Result.Verdict against the
// XDP constants.
type TCAction int32

// TC actions, as in the kernel's include/uapi/linux/pkt_cls.h.
const (
	TCActUnspec     TCAction = -1
	TCActOK         TCAction = 0
	TCActReclassify TCAction = 1
	TCActShot       TCAction = 2
	TCActPipe       TCAction = 3
	TCActStolen     TCAction = 4
	TCActQueued     TCAction = 5
	TCActRepeat     TCAction = 6
	TCActRedirect   TCAction = 7
	TCActTrap       TCAction = 8
)

// String returns the kernel's name for the action.
func (a TCAction) String() string {
	names := map[TCAction]string{
		TCActUnspec: "TC_ACT_UNSPEC", TCActOK: "TC_ACT_OK", TCActReclassify: "TC_ACT_RECLASSIFY",
		TCActShot: "TC_ACT_SHOT", TCActPipe: "TC_ACT_PIPE", TCActStolen: "TC_ACT_STOLEN",
		TCActQueued: "TC_ACT_QUEUED", TCActRepeat: "TC_ACT_REPEAT", TCActRedirect: "TC_ACT_REDIRECT",
		TCActTrap: "TC_ACT_TRAP",
	}
	if n, ok := names[a]; ok {
		return n
	}
	return fmt.Sprintf("TC_ACT_UNKNOWN(%d)", int32(a))
}

// Result is what one BPF_PROG_RUN produced.
type Result struct {
	// Verdict is the program's return value. For XDP programs compare it
	// with the XDP constants; for TC programs use TC().
	Verdict Verdict
	// Out is the packet after the program ran, cut to the length the
	// kernel reported (longer than the input after an encapsulation).
	Out []byte
	// Packet is Out decoded as an Ethernet frame.
	Packet gopacket.Packet
	// Type is the program's type, which decides how Verdict reads.
	Type ebpf.ProgramType
}

// TC returns the verdict as a TC action, for sched_cls programs.
func (r Result) TC() TCAction {
	return TCAction(int32(r.Verdict))
}

// outRoom is how much larger than the input the output buffer is. XDP can
// prepend up to 256 bytes (XDP_PACKET_HEADROOM) and grow the tail into the
// rest of its page, and TC can grow the skb; a buffer sized for the input
// alone would make the kernel fail the run with ENOSPC.
const outRoom = 4096

// Run runs prog once on frame with BPF_PROG_RUN and decodes the output.
// It fails the test if the run itself fails. Because the project's programs
// must never return XDP_ABORTED (a bug signal, not a verdict), an XDP program
// that returns it, or a value the kernel does not define, is reported with
// t.Errorf unless AllowAborted is given.
//
// The kernel runs the program on the calling CPU: tests that read per-CPU
// map state afterwards pin themselves with testenv.LockCPU first.
func Run(t testing.TB, prog *ebpf.Program, frame []byte, opts ...Option) Result {
	t.Helper()
	o := collect(opts)
	ro := &ebpf.RunOptions{
		Data:    frame,
		DataOut: make([]byte, len(frame)+outRoom),
		Context: o.runCtx,
		Repeat:  1,
	}
	ret, err := prog.Run(ro)
	if err != nil {
		t.Fatalf("run %v on a %d-byte frame: %v", prog, len(frame), err)
	}
	r := Result{
		Verdict: Verdict(ret),
		Out:     ro.DataOut,
		Packet:  Decode(ro.DataOut),
		Type:    prog.Type(),
	}
	if r.Type == ebpf.XDP && !o.allowAborted && (r.Verdict == XDPAborted || r.Verdict > XDPRedirect) {
		t.Errorf("%v returned %v: a program must never abort (pass pkttest.AllowAborted() if this case expects it)", prog, r.Verdict)
	}
	return r
}

// Decode decodes an Ethernet frame the way every function of this package
// does, so that packets a test decodes itself compare like Run's.
func Decode(frame []byte) gopacket.Packet {
	return gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
}

// Option adjusts Run, Diff, Expect, Checksums or VerifyChecksums. Each
// option documents which of them it affects; the others ignore it, so one
// set of options can be shared by all the calls of a test case.
type Option func(*options)

type options struct {
	allowAborted bool
	runCtx       any
	guePort      uint16
	ignore       map[string]bool
}

func collect(opts []Option) options {
	o := options{guePort: DefaultGUEPort}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// AllowAborted lets Run accept XDP_ABORTED and undefined XDP return values,
// for the rare test that checks a program's reaction to a broken helper or a
// deliberately faulty fixture. (Run.)
func AllowAborted() Option {
	return func(o *options) { o.allowAborted = true }
}

// RunContext passes ctx as the program's context: a struct laid out like
// xdp_md or __sk_buff, for programs that read the ingress ifindex, the RX
// queue or skb fields. (Run.)
func RunContext(ctx any) Option {
	return func(o *options) { o.runCtx = ctx }
}

// GUEPort makes UDP packets to port, instead of DefaultGUEPort, count as GUE
// so that their payload is decoded and compared as an inner packet. (Diff,
// Expect, Checksums, VerifyChecksums.)
func GUEPort(port uint16) Option {
	return func(o *options) { o.guePort = port }
}

// IgnoreFields makes Diff and Expect skip fields whose value a test cannot
// know in advance or checks elsewhere (a hash-derived flow label or source
// port, checksums verified by VerifyChecksums). A name is either a field
// ("Checksum": in every layer) or a layer and field as Diff prints them
// ("IPv6.FlowLabel": IPv6 layers outside a GUE tunnel; "GUE/IPv4.TTL": IPv4
// layers inside one); "trailer" and "GUE/trailer" name the bytes after the
// last header. With any field ignored, Expect no longer requires the
// frames to be byte-for-byte equal, only field-for-field. (Diff, Expect.)
func IgnoreFields(names ...string) Option {
	return func(o *options) {
		if o.ignore == nil {
			o.ignore = map[string]bool{}
		}
		for _, n := range names {
			o.ignore[n] = true
		}
	}
}
