package bench

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Restoring wraps prog in a shim that first writes frame back over the
// packet and then tail-calls prog.
//
// Live-frames mode resets only the context (the data pointers) between
// iterations, not the bytes: a page is reused with whatever the previous
// iteration wrote into it. A program that encapsulates overwrites the
// original Ethernet header with its new outer headers, so without the shim
// every iteration after a page's first would see a mangled frame and take
// another path. Compare both the program and its baseline through the same
// shim (Restoring(EmptyProgram(v), frame)) so the shim's cost cancels.
//
// attach must be the expected attach type prog was loaded with (ebpf.AttachXDP
// for programs in ELF section "xdp", ebpf.AttachNone for programs built by
// hand): the kernel refuses a tail call between programs whose types differ.
// Close the Shim after measuring.
func Restoring(prog *ebpf.Program, frame []byte, attach ebpf.AttachType) (*Shim, error) {
	if len(frame) < 14 || len(frame) > 256 {
		return nil, fmt.Errorf("restoring shim: %d-byte frame: %w", len(frame), errors.ErrUnsupported)
	}
	calls, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return nil, fmt.Errorf("restoring shim: create program array: %w", err)
	}
	if err := calls.Put(uint32(0), prog); err != nil {
		calls.Close()
		return nil, fmt.Errorf("restoring shim: install program: %w", err)
	}

	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, int32(len(frame))),
		asm.JGT.Reg(asm.R4, asm.R3, "out"),
	}
	off := 0
	for ; off+4 <= len(frame); off += 4 {
		insns = append(insns, asm.StoreImm(asm.R2, int16(off), int64(int32(binary.LittleEndian.Uint32(frame[off:]))), asm.Word))
	}
	for ; off < len(frame); off++ {
		insns = append(insns, asm.StoreImm(asm.R2, int16(off), int64(frame[off]), asm.Byte))
	}
	insns = append(insns,
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, calls.FD()),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnTailCall.Call(),
		// Reached only if the tail call fails: a verdict no case expects.
		asm.Mov.Imm(asm.R0, int32(Aborted)).WithSymbol("out"),
		asm.Return(),
	)
	shim, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "bench_restore",
		AttachType:   attach,
		Type:         ebpf.XDP,
		License:      license,
		Instructions: insns,
	})
	if err != nil {
		calls.Close()
		return nil, fmt.Errorf("restoring shim: load: %w", err)
	}
	return &Shim{Program: shim, calls: calls}, nil
}

// Shim is a program built by Restoring.
type Shim struct {
	Program *ebpf.Program
	// calls must stay open while the shim runs: the kernel empties a
	// program array when its last file descriptor closes.
	calls *ebpf.Map
}

// Close releases the shim and its program array.
func (s *Shim) Close() error {
	return errors.Join(s.Program.Close(), s.calls.Close())
}
