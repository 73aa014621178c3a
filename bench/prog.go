package bench

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Verdict is an XDP action code as a program returns it.
type Verdict uint32

// The XDP actions from include/uapi/linux/bpf.h. Only Drop, Pass and TX have
// empty baselines: Aborted is a bug, and Redirect's cost depends on a map the
// baseline could not know.
const (
	Aborted  Verdict = 0
	Drop     Verdict = 1
	Pass     Verdict = 2
	TX       Verdict = 3
	Redirect Verdict = 4
)

// String returns the kernel's name for the action, as people read it in
// bpftool and xdp-tools output.
func (v Verdict) String() string {
	switch v {
	case Aborted:
		return "XDP_ABORTED"
	case Drop:
		return "XDP_DROP"
	case Pass:
		return "XDP_PASS"
	case TX:
		return "XDP_TX"
	case Redirect:
		return "XDP_REDIRECT"
	}
	return fmt.Sprintf("XDP_%d", uint32(v))
}

// license is what the kernel sees for the programs built here. They call no
// GPL-only helper, so the choice only has to be a string the kernel accepts.
const license = "Dual MIT/GPL"

// EmptyProgram loads an XDP program that does nothing but return v. It is the
// baseline every measured program is compared with: whatever the kernel
// spends around a program that returns v (the test-run loop, the transmit on
// XDP_TX, the stack on XDP_PASS) is in both numbers and cancels out.
func EmptyProgram(v Verdict) (*ebpf.Program, error) {
	return emptyXDP(v, ebpf.AttachNone)
}

// emptyXDP is EmptyProgram with an expected attach type: a program array
// accepts only programs of the attach type of its first user, and programs
// loaded from an ELF "xdp" section expect AttachXDP.
func emptyXDP(v Verdict, attach ebpf.AttachType) (*ebpf.Program, error) {
	switch v {
	case Drop, Pass, TX:
	default:
		return nil, fmt.Errorf("empty program for %s: only XDP_DROP, XDP_PASS and XDP_TX have a baseline", v)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:       "bench_empty",
		Type:       ebpf.XDP,
		AttachType: attach,
		License:    license,
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, int32(v)),
			asm.Return(),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("load empty %s program: %w", v, err)
	}
	return prog, nil
}

// sink is the XDP program on the receiving end of the veth pair. Native
// XDP_TX into a veth is delivered only when the receiving peer runs XDP (see
// ENVIRONMENT.md), and dropping there is the cheapest way to consume the
// frames. It counts what it drops so tests can prove that live frames were
// really transmitted rather than trusting the timings.
type sink struct {
	prog  *ebpf.Program
	count *ebpf.Map
}

func newSink() (*sink, error) {
	// Per-CPU so the counter costs a plain add, not an atomic on a shared
	// cache line; the reader sums the CPUs.
	count, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "bench_sink",
		Type:       ebpf.PerCPUArray,
		KeySize:    4,
		ValueSize:  8,
		MaxEntries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("create sink counter map: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    "bench_sink",
		Type:    ebpf.XDP,
		License: license,
		Instructions: asm.Instructions{
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, count.FD()),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, int32(Drop)).WithSymbol("out"),
			asm.Return(),
		},
	})
	if err != nil {
		count.Close()
		return nil, fmt.Errorf("load sink program: %w", err)
	}
	return &sink{prog: prog, count: count}, nil
}

// received returns how many frames the sink has dropped since it was loaded.
func (s *sink) received() (uint64, error) {
	var perCPU []uint64
	if err := s.count.Lookup(uint32(0), &perCPU); err != nil {
		return 0, fmt.Errorf("read sink counter: %w", err)
	}
	var n uint64
	for _, c := range perCPU {
		n += c
	}
	return n, nil
}

func (s *sink) close() {
	s.prog.Close()
	s.count.Close()
}
