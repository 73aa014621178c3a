// Package chain runs several XDP or TC programs on one hook of an interface,
// one after the other (bpf/chain.bpf.c, bpf/include/chain.h).
//
// A Chain is a root program with its own maps. Members are programs built
// with chain.h and loaded with MemberMaps as map replacements; Set puts them
// in order and switches to the new order with one map update, so that a
// packet runs either the whole old chain or the whole new one.
//
// # Regions
//
// The program array holds Generations regions of Slots programs each. Set
// writes the new chain into the region after the active one, clearing it
// first, and then writes that region's index into the root's active-region
// map: the one update that switches chains. The root reads the index once
// per packet and every member continues within that region, so a packet that
// read region g before the switch finishes in region g, with the programs g
// held when the packet started; no packet skips a program that is in both
// chains.
//
// A region must not change under such a packet. After the switch Set waits
// for an RCU grace period (XDP and TC programs run inside RCU read-side
// sections, so by then every run that read the old index has returned) and
// only then empties the old region, releasing its programs. On top of that,
// a region is written again only when the rotation comes round to it, after
// Generations-1 further switches, each with its own grace period. The
// rotation costs Generations×Slots program-array entries and nothing on the
// packet path (the root adds region×Slots to the slot number); the grace
// period makes each Set take milliseconds.
//
// A Chain is safe for concurrent use.
package chain

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/sluice-dp/sluice/dataplane/attach"
	"github.com/sluice-dp/sluice/dataplane/internal/bpfenc"
	"github.com/sluice-dp/sluice/dataplane/internal/feature"
)

// Slots is the largest number of programs in a chain, and Generations the
// number of regions Set rotates through (CHAIN_SLOTS and CHAIN_GENERATIONS
// of chain.h).
const (
	Slots       = 8
	Generations = 8
)

// Sentinel errors, checked with errors.Is. Set and Load wrap them with
// the member or option at fault.
var (
	// ErrInvalid marks a bad argument: a nil program, an empty name, an
	// unknown hook.
	ErrInvalid = errors.New("invalid")
	// ErrTooLong marks a chain of more than Slots programs.
	ErrTooLong = errors.New("chain too long")
	// ErrDuplicate marks a chain that names a member or holds a program
	// twice.
	ErrDuplicate = errors.New("duplicate member")
	// ErrProgramType marks a member whose program type does not fit the
	// chain's hook (XDP for XDP, sched_cls for TC).
	ErrProgramType = errors.New("wrong program type")
	// ErrNotMember marks a program that uses chain maps other than this
	// chain's: loaded standalone or for another chain, its chain_next
	// would end the chain where it stands instead of continuing.
	ErrNotMember = errors.New("not loaded with this chain's maps")
	// ErrClosed marks a call on a closed Chain.
	ErrClosed = errors.New("chain closed")
)

// Hook is where a chain runs.
type Hook uint8

// Hooks.
const (
	// XDP runs the chain in the XDP hook of an interface.
	XDP Hook = iota + 1
	// TCIngress runs the chain on packets an interface receives, after
	// XDP, in TC.
	TCIngress
	// TCEgress runs the chain on packets an interface sends, in TC.
	TCEgress
)

// String returns the hook's name, for logs and errors.
func (h Hook) String() string {
	switch h {
	case XDP:
		return "xdp"
	case TCIngress:
		return "tc-ingress"
	case TCEgress:
		return "tc-egress"
	}
	return fmt.Sprintf("hook(%d)", uint8(h))
}

// expectedAttach names the expected attach type of the hook's root, which
// members must share.
func (h Hook) expectedAttach() string {
	if h == XDP {
		return "AttachXDP, as for ELF section \"xdp\""
	}
	return "AttachNone, as for ELF section \"tc\""
}

// ProgramType is the type every program of a chain on this hook has.
func (h Hook) ProgramType() ebpf.ProgramType {
	if h == XDP {
		return ebpf.XDP
	}
	return ebpf.SchedCLS
}

// Options adjust Load.
type Options struct {
	// Name names the chain in errors and, on the netlink TC path, its
	// cls_bpf filter. Default "sluice_chain_" plus the hook.
	Name string
}

// Member is one program of a chain.
type Member struct {
	// Name identifies the member in Members and in errors; unique in a
	// chain.
	Name string
	// Program is the member, of the hook's program type. A program built
	// with chain.h must have been loaded with MemberMaps (Set checks);
	// a program without chain.h ends the chain with its verdict. The
	// chain holds its own reference: the caller may close its handle
	// after Set.
	Program *ebpf.Program
}

// Chain is a loaded root program with its members.
type Chain struct {
	mu    sync.Mutex
	hook  Hook
	name  string
	prog  *ebpf.Program
	maps  chainMaps
	names []string
	grace *ebpf.Map
	// graceInner is what Set stores in grace.
	graceInner *ebpf.Map
	members    []Member
	active     uint32
	closed     bool
}

// Load loads the root program of hook and its maps. The chain is empty: it
// passes every packet until Set gives it members.
func Load(hook Hook, opts Options) (*Chain, error) {
	if hook != XDP && hook != TCIngress && hook != TCEgress {
		return nil, fmt.Errorf("load chain: hook %v: %w", hook, ErrInvalid)
	}
	if opts.Name == "" {
		opts.Name = "sluice_chain_" + hook.String()
	}
	spec, err := loadChain()
	if err != nil {
		return nil, fmt.Errorf("load chain %s spec: %w", opts.Name, err)
	}
	if n := spec.Maps["chain_progs"].MaxEntries; n != Slots*Generations {
		return nil, fmt.Errorf("load chain %s: chain_progs has %d entries, Slots×Generations is %d: chain.h and this package disagree", opts.Name, n, Slots*Generations)
	}
	names, err := bpfenc.StatNames(spec, "chain_stat", "CHAIN_STAT_")
	if err != nil {
		return nil, fmt.Errorf("load chain %s: %w", opts.Name, err)
	}
	root := "chain_tc"
	if hook == XDP {
		root = "chain_xdp"
	}
	// Only the root of this hook is loaded: a program array accepts
	// programs of the type of the first program that uses it.
	for name := range spec.Programs {
		if name != root {
			delete(spec.Programs, name)
		}
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		return nil, fmt.Errorf("load chain %s objects: %w", opts.Name, feature.Explain(spec, err))
	}
	defer coll.Close()
	c := &Chain{hook: hook, name: opts.Name, names: names}
	if err := coll.Assign(&c.maps); err != nil {
		return nil, fmt.Errorf("load chain %s maps: %w", opts.Name, err)
	}
	c.prog = coll.DetachProgram(root)
	if err := c.newGrace(); err != nil {
		c.prog.Close()
		c.maps.Close()
		return nil, fmt.Errorf("load chain %s: %w", opts.Name, err)
	}
	return c, nil
}

// newGrace creates an array of maps, holding one map, whose updates from
// user space wait for an RCU grace period (see Set). What it holds does not
// matter.
func (c *Chain) newGrace() error {
	inner := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}
	var err error
	if c.graceInner, err = ebpf.NewMap(inner); err != nil {
		return fmt.Errorf("create grace-period inner map: %w", err)
	}
	c.grace, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.ArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 1, InnerMap: inner})
	if err != nil {
		c.graceInner.Close()
		return fmt.Errorf("create grace-period map: %w", err)
	}
	return nil
}

// Hook returns the hook the chain was loaded for.
func (c *Chain) Hook() Hook { return c.hook }

// Program returns the root program, for attaching it elsewhere or running it
// with BPF_PROG_RUN in tests and benchmarks.
func (c *Chain) Program() *ebpf.Program { return c.prog }

// MemberMaps returns the maps a member must share with the root, by their
// names in chain.h: pass them as ebpf.CollectionOptions.MapReplacements when
// loading a member. The maps stay owned by the Chain.
func (c *Chain) MemberMaps() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		"chain_progs":  c.maps.ChainProgs,
		"chain_cursor": c.maps.ChainCursor,
	}
}

// Members returns the chain in force, in order.
func (c *Chain) Members() []Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.members)
}

// Set makes members the chain, in order; an empty list empties it. It
// writes them into the next region and switches to it with one map update,
// so a packet runs either the old chain or the new one, whole. Members that
// are in both run for every packet. A rejected list, or an error before the
// switch, leaves the old chain running untouched.
//
// Set returns once no packet runs the old chain any more: it waits for an
// RCU grace period after the switch, which takes milliseconds.
func (c *Chain) Set(members []Member) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("set chain %s: %w", c.name, ErrClosed)
	}
	if err := c.validate(members); err != nil {
		return fmt.Errorf("set chain %s: %w", c.name, err)
	}
	region := (c.active + 1) % Generations
	base := region * Slots
	// A Set that failed before its switch may have left programs here.
	if err := c.clearRegion(region); err != nil {
		return fmt.Errorf("set chain %s: %w", c.name, err)
	}
	for i, m := range members {
		if err := c.maps.ChainProgs.Put(base+uint32(i), m.Program); err != nil {
			// The type was checked; what the kernel still refuses is
			// most likely an expected attach type unlike the root's.
			return fmt.Errorf("set chain %s: member %s (its expected attach type must be the root's: %s): %w", c.name, m.Name, c.hook.expectedAttach(), err)
		}
	}
	if err := c.maps.ChainLens.Put(region, uint32(len(members))); err != nil {
		return fmt.Errorf("set chain %s: length of region %d: %w", c.name, region, err)
	}
	if err := c.maps.ChainActive.Put(uint32(0), region); err != nil {
		return fmt.Errorf("set chain %s: switch to region %d: %w", c.name, region, err)
	}
	old := c.active
	c.active = region
	c.members = slices.Clone(members)
	// The kernel waits for a grace period after an update of an array of
	// maps, so that every root run that read the old region, and the
	// members it tail-called, has finished when this returns.
	if err := c.grace.Put(uint32(0), c.graceInner); err != nil {
		return fmt.Errorf("set chain %s: wait for the old chain to drain: %w", c.name, err)
	}
	// No packet runs the old region any more: release its programs now
	// rather than when the region comes round again.
	if err := c.clearRegion(old); err != nil {
		return fmt.Errorf("set chain %s: %w", c.name, err)
	}
	return nil
}

// clearRegion empties the program slots of a region.
func (c *Chain) clearRegion(region uint32) error {
	for i := range uint32(Slots) {
		err := c.maps.ChainProgs.Delete(region*Slots + i)
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("clear slot %d of region %d: %w", i, region, err)
		}
	}
	return nil
}

func (c *Chain) validate(members []Member) error {
	if len(members) > Slots {
		return fmt.Errorf("%d members: %w: at most %d", len(members), ErrTooLong, Slots)
	}
	names := make(map[string]bool, len(members))
	ids := make(map[ebpf.ProgramID]string, len(members))
	for i, m := range members {
		if m.Name == "" {
			return fmt.Errorf("member %d: %w: no name", i, ErrInvalid)
		}
		if names[m.Name] {
			return fmt.Errorf("member %s: %w: name given twice", m.Name, ErrDuplicate)
		}
		names[m.Name] = true
		if m.Program == nil {
			return fmt.Errorf("member %s: %w: no program", m.Name, ErrInvalid)
		}
		if t := m.Program.Type(); t != c.hook.ProgramType() {
			return fmt.Errorf("member %s: %w: %v, want %v for %v", m.Name, ErrProgramType, t, c.hook.ProgramType(), c.hook)
		}
		info, err := m.Program.Info()
		if err != nil {
			return fmt.Errorf("member %s: program info: %w", m.Name, err)
		}
		id, ok := info.ID()
		if !ok {
			return fmt.Errorf("member %s: program id: %w", m.Name, ebpf.ErrNotSupported)
		}
		if other, ok := ids[id]; ok {
			return fmt.Errorf("member %s: %w: same program as member %s", m.Name, ErrDuplicate, other)
		}
		ids[id] = m.Name
		if err := c.checkMaps(info); err != nil {
			return fmt.Errorf("member %s: %w", m.Name, err)
		}
	}
	return nil
}

// checkMaps rejects a program that uses a map named like one of the
// member maps but is not this chain's: chain_next in such a program would
// tail-call into an array this chain never fills and end the chain there.
// Programs that use no chain map (such as the LB) end the chain on purpose
// and pass.
func (c *Chain) checkMaps(info *ebpf.ProgramInfo) error {
	mapIDs, ok := info.MapIDs()
	if !ok {
		return fmt.Errorf("list the program's maps: %w", ebpf.ErrNotSupported)
	}
	own := map[string]ebpf.MapID{}
	for name, m := range c.MemberMaps() {
		mi, err := m.Info()
		if err != nil {
			return fmt.Errorf("info of %s: %w", name, err)
		}
		id, _ := mi.ID()
		own[name] = id
	}
	for _, id := range mapIDs {
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			return fmt.Errorf("open map %d: %w", id, err)
		}
		mi, err := m.Info()
		m.Close()
		if err != nil {
			return fmt.Errorf("info of map %d: %w", id, err)
		}
		if want, ok := own[mi.Name]; ok && id != want {
			return fmt.Errorf("%w: its %s is map %d, the chain's is %d", ErrNotMember, mi.Name, id, want)
		}
	}
	return nil
}

// Close releases the root program and the maps. The kernel empties a
// program array when the last file descriptor to it closes, dropping its
// references to the members: an attachment left in place keeps the root
// running, but the root then passes every packet (counted as
// tail_call_failed). Close the attachments first.
func (c *Chain) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	return errors.Join(c.prog.Close(), c.maps.Close(), c.grace.Close(), c.graceInner.Close())
}

// AttachOptions adjust Attach.
type AttachOptions struct {
	// Mode is the XDP attach mode; TC chains ignore it.
	Mode attach.Mode
	// ForceNetlink attaches a TC chain with a clsact cls_bpf filter even
	// where tcx exists; XDP chains ignore it.
	ForceNetlink bool
}

// filterPriority and filterHandle identify the chain's cls_bpf filters,
// apart from the agent's and any other program's.
const (
	filterPriority = 0x5c
	filterHandle   = 1
)

// Attachment is a chain attached to one interface. Close detaches it.
type Attachment struct {
	Interface string
	Hook      Hook
	// Mode is the XDP attach mode, for an XDP chain.
	Mode attach.Mode
	// Method is how a TC chain is attached (zero for XDP).
	Method attach.Method

	close func() error
}

// Close detaches the chain from the interface.
func (a *Attachment) Close() error { return a.close() }

// Attach attaches the root to iface, in the current network namespace, at
// the chain's hook. One chain may be attached to several interfaces; they
// then run the same members.
func (c *Chain) Attach(iface string, o AttachOptions) (*Attachment, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("attach chain %s to %s: %w", c.name, iface, ErrClosed)
	}
	if c.hook == XDP {
		x, err := attach.XDP(c.prog, iface, o.Mode)
		if err != nil {
			return nil, fmt.Errorf("attach chain %s to %s: %w", c.name, iface, err)
		}
		return &Attachment{Interface: iface, Hook: c.hook, Mode: o.Mode, close: x.Close}, nil
	}
	dir := attach.Ingress
	if c.hook == TCEgress {
		dir = attach.Egress
	}
	t, err := attach.TC(iface, []attach.TCProgram{{Program: c.prog, Direction: dir, Name: c.name}},
		attach.TCOptions{ForceNetlink: o.ForceNetlink, Priority: filterPriority, Handle: filterHandle})
	if err != nil {
		return nil, fmt.Errorf("attach chain %s to %s: %w", c.name, iface, err)
	}
	return &Attachment{Interface: iface, Hook: c.hook, Method: t.Method, close: t.Close}, nil
}
