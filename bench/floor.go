package bench

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Floor is a program that makes only the calls the load balancer's GUE hit
// path cannot avoid — a hash lookup with a VIP-sized key, an LRU hash
// lookup with a connection-table-sized key, both hitting, and
// bpf_xdp_adjust_head for the outer headers — and returns XDP_TX. Measured
// in the same run as the load balancer, it shows how much of the hit path's
// cost is those calls and how much is the program's own code.
type Floor struct {
	Program *ebpf.Program
	maps    []*ebpf.Map
}

// Key sizes of struct vip_key and struct flow_key in bpf/include/lb.h.
const (
	vipKeySize  = 20
	flowKeySize = 24
)

// NewFloor loads the floor program and its two maps, each holding the
// all-zero key that the program looks up.
func NewFloor() (f *Floor, err error) {
	f = &Floor{}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	vips, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: vipKeySize, ValueSize: 8, MaxEntries: 1024})
	if err != nil {
		return nil, fmt.Errorf("floor: create hash map: %w", err)
	}
	f.maps = append(f.maps, vips)
	conns, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: flowKeySize, ValueSize: 16, MaxEntries: 65536})
	if err != nil {
		return nil, fmt.Errorf("floor: create lru map: %w", err)
	}
	f.maps = append(f.maps, conns)
	if err := vips.Put(make([]byte, vipKeySize), make([]byte, 8)); err != nil {
		return nil, fmt.Errorf("floor: fill hash map: %w", err)
	}
	if err := conns.Put(make([]byte, flowKeySize), make([]byte, 16)); err != nil {
		return nil, fmt.Errorf("floor: fill lru map: %w", err)
	}
	// The all-zero key lives at fp-24 .. fp-1; the hash map reads its
	// first 20 bytes.
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.RFP, -24, asm.R1, asm.DWord),
		asm.StoreMem(asm.RFP, -16, asm.R1, asm.DWord),
		asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
		asm.LoadMapPtr(asm.R1, vips.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -24),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "miss"),
		asm.LoadMapPtr(asm.R1, conns.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -24),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "miss"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, -28),
		asm.FnXdpAdjustHead.Call(),
		asm.Mov.Imm(asm.R0, int32(TX)),
		asm.Return(),
		// A miss would measure the wrong path: make the verdict check fail.
		asm.Mov.Imm(asm.R0, int32(Drop)).WithSymbol("miss"),
		asm.Return(),
	}
	f.Program, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "bench_floor",
		Type:         ebpf.XDP,
		License:      license,
		Instructions: insns,
	})
	if err != nil {
		return nil, fmt.Errorf("floor: load program: %w", err)
	}
	return f, nil
}

// Close releases the program and its maps.
func (f *Floor) Close() error {
	var err error
	if f.Program != nil {
		err = f.Program.Close()
	}
	for _, m := range f.maps {
		err = errors.Join(err, m.Close())
	}
	return err
}
