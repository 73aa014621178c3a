package lb

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/sluice-dp/sluice/ctl/maglev"
	"github.com/sluice-dp/sluice/dataplane/internal/bpfenc"
	"github.com/sluice-dp/sluice/dataplane/l4"
)

// VIP identifies a virtual service. Port 0 means every port of Addr for
// Proto; a packet matches its exact port first, then port 0.
type VIP struct {
	Addr  netip.Addr
	Port  uint16
	Proto l4.Proto
}

// String formats the VIP as address:port/protocol.
func (v VIP) String() string {
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(v.Addr, v.Port), v.Proto)
}

// Encap is the encapsulation toward a VIP's backends.
type Encap uint8

// Encapsulations.
const (
	// GUE is GUE variant 1: outer IP, UDP to Config.GUEPort, inner packet.
	GUE Encap = iota
	// IPIP is IPv4-in-IPv4, IP6IP6 or IPv4-in-IPv6, by family.
	IPIP
)

func (e Encap) String() string {
	if e == IPIP {
		return "ipip"
	}
	return "gue"
}

// VIPOptions are per-VIP behaviours.
type VIPOptions struct {
	// SourceHash hashes on the client address only (client affinity).
	SourceHash bool
	// Stateless skips the connection table: every packet takes the ring.
	Stateless bool
	// Encap selects the encapsulation. Default GUE.
	Encap Encap
}

func (o VIPOptions) flags() uint32 {
	var f uint32
	if o.SourceHash {
		f |= vipFlagSrcHash
	}
	if o.Stateless {
		f |= vipFlagStateless
	}
	if o.Encap == IPIP {
		f |= vipFlagIPIP
	}
	return f
}

// Backend is one real server of a VIP.
type Backend struct {
	Addr netip.Addr
	// Weight is the backend's share of new flows relative to the others.
	Weight uint32
	// Down keeps the backend known but sends it no traffic: it leaves the
	// ring and its connection-table entries are no longer used.
	Down bool
}

// Values of the C enums lb_vip_flag, lb_real_flag and lb_family.
const (
	vipFlagSrcHash   = 1 << 0
	vipFlagStateless = 1 << 1
	vipFlagIPIP      = 1 << 2
	vipFlagAddr      = 1 << 3
	realFlagUp       = 1 << 0
	familyV4         = 4
	familyV6         = 6
)

type realState struct {
	id      uint32
	gen     uint32
	backend Backend
}

type vipState struct {
	id       uint32
	opts     VIPOptions
	backends map[netip.Addr]*realState
}

func (v VIP) validate() error {
	switch {
	case !v.Addr.IsValid():
		return fmt.Errorf("vip %v: %w: address", v, ErrInvalid)
	case v.Addr.Is4In6() || v.Addr.Zone() != "":
		return fmt.Errorf("vip %v: %w: plain IPv4 or IPv6 address", v, ErrInvalid)
	case v.Proto != l4.TCP && v.Proto != l4.UDP:
		return fmt.Errorf("vip %v: %w: protocol tcp or udp", v, ErrInvalid)
	}
	return nil
}

// AddVIP adds a VIP with no backends: its packets are dropped (counted as
// drop_no_backend) until SetBackends gives it some.
func (l *LB) AddVIP(v VIP, o VIPOptions) error {
	if err := v.validate(); err != nil {
		return fmt.Errorf("add %w", err)
	}
	if o.Encap != GUE && o.Encap != IPIP {
		return fmt.Errorf("add vip %v: encap %d: %w", v, o.Encap, ErrInvalid)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.vips[v]; ok {
		return fmt.Errorf("add vip %v: %w", v, ErrExists)
	}
	id, ok := l.vipIDs.get()
	if !ok {
		return fmt.Errorf("add vip %v: %w: at most %d vips", v, ErrFull, l.opts.MaxVIPs)
	}
	zero := make([]lbLbTraffic, possibleCPUs())
	if err := l.objs.VipStats.Put(id, zero); err != nil {
		l.vipIDs.put(id)
		return fmt.Errorf("add vip %v: reset counters: %w", v, err)
	}
	if l.addrRefs[v.Addr] == 0 {
		marker := lbVipMeta{Flags: vipFlagAddr}
		if err := l.objs.Vips.Put(vipKey(VIP{Addr: v.Addr}), &marker); err != nil {
			l.vipIDs.put(id)
			return fmt.Errorf("add vip %v: address marker: %w", v, err)
		}
	}
	meta := lbVipMeta{Id: id, Flags: o.flags()}
	if err := l.objs.Vips.Put(vipKey(v), &meta); err != nil {
		if l.addrRefs[v.Addr] == 0 {
			_ = l.objs.Vips.Delete(vipKey(VIP{Addr: v.Addr}))
		}
		l.vipIDs.put(id)
		return fmt.Errorf("add vip %v: %w", v, err)
	}
	l.addrRefs[v.Addr]++
	l.vips[v] = &vipState{id: id, opts: o, backends: make(map[netip.Addr]*realState)}
	return nil
}

// RemoveVIP removes a VIP and its backends. Its address stops answering
// echo requests once no VIP uses it.
func (l *LB) RemoveVIP(v VIP) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.vips[v]
	if !ok {
		return fmt.Errorf("remove vip %v: %w", v, ErrNotFound)
	}
	if err := l.objs.Vips.Delete(vipKey(v)); err != nil {
		return fmt.Errorf("remove vip %v: %w", v, err)
	}
	if err := l.objs.Rings.Delete(s.id); err != nil && !isNotExist(err) {
		return fmt.Errorf("remove vip %v: ring: %w", v, err)
	}
	for _, r := range s.backends {
		if err := l.releaseReal(r); err != nil {
			return fmt.Errorf("remove vip %v: %w", v, err)
		}
	}
	l.addrRefs[v.Addr]--
	if l.addrRefs[v.Addr] == 0 {
		delete(l.addrRefs, v.Addr)
		if err := l.objs.Vips.Delete(vipKey(VIP{Addr: v.Addr})); err != nil {
			return fmt.Errorf("remove vip %v: address marker: %w", v, err)
		}
	}
	l.vipIDs.put(s.id)
	delete(l.vips, v)
	return nil
}

// VIPs returns the configured VIPs.
func (l *LB) VIPs() []VIP {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]VIP, 0, len(l.vips))
	for v := range l.vips {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b VIP) int {
		return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto))
	})
	return out
}

// Backends returns a VIP's backends sorted by address.
func (l *LB) Backends(v VIP) ([]Backend, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.vips[v]
	if !ok {
		return nil, fmt.Errorf("vip %v: %w", v, ErrNotFound)
	}
	out := make([]Backend, 0, len(s.backends))
	for _, r := range s.backends {
		out = append(out, r.backend)
	}
	slices.SortFunc(out, func(a, b Backend) int { return a.Addr.Compare(b.Addr) })
	return out, nil
}

func checkSources(cfg Config, v VIP, backends map[netip.Addr]*realState) error {
	for a, r := range backends {
		if err := checkBackend(cfg, v, r.backend); err != nil {
			return fmt.Errorf("vip %v backend %v: %w", v, a, err)
		}
	}
	return nil
}

func checkBackend(cfg Config, v VIP, b Backend) error {
	switch {
	case !b.Addr.IsValid() || b.Addr.Is4In6() || b.Addr.Zone() != "":
		return fmt.Errorf("%w: a plain IPv4 or IPv6 address", ErrInvalid)
	case b.Addr.IsUnspecified():
		// maglev.New refuses it too, but only after SetBackends has
		// started changing state.
		return fmt.Errorf("%w: a specified address, not %v", ErrInvalid, b.Addr)
	case v.Addr.Is6() && b.Addr.Is4():
		return fmt.Errorf("%w: an IPv6 VIP needs IPv6 backends (IPv6 cannot be carried in IPv4 here)", ErrInvalid)
	case b.Weight == 0:
		return fmt.Errorf("%w: weight must be at least 1 (mark the backend down instead)", ErrInvalid)
	case b.Addr.Is4() && !cfg.SourceV4.IsValid():
		return fmt.Errorf("%w: an IPv4 backend needs config source_v4", ErrInvalid)
	case b.Addr.Is6() && !cfg.SourceV6.IsValid():
		return fmt.Errorf("%w: an IPv6 backend needs config source_v6", ErrInvalid)
	}
	return nil
}

// SetBackends replaces a VIP's backends. It validates the whole set first
// (a rejected set changes nothing), writes new backends, builds the Maglev
// table of the backends that are up, swaps the VIP's ring in one map update,
// and only then retires removed backends, so a packet never sees a ring
// naming a backend that is gone, nor a half-written or empty ring. Flows in
// the connection table keep their backend if it survives.
func (l *LB) SetBackends(v VIP, backends []Backend) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.vips[v]
	if !ok {
		return fmt.Errorf("set backends of vip %v: %w", v, ErrNotFound)
	}
	want := make(map[netip.Addr]Backend, len(backends))
	added, up := 0, 0
	for _, b := range backends {
		if err := checkBackend(l.cfg, v, b); err != nil {
			return fmt.Errorf("set backends of vip %v: backend %v: %w", v, b.Addr, err)
		}
		if _, dup := want[b.Addr]; dup {
			return fmt.Errorf("set backends of vip %v: backend %v: %w: listed twice", v, b.Addr, ErrInvalid)
		}
		want[b.Addr] = b
		if _, ok := s.backends[b.Addr]; !ok {
			added++
		}
		if !b.Down {
			up++
		}
	}
	// A Maglev table gives every up backend a slot; checked here because
	// publishRing runs after the state has changed.
	if up > int(l.opts.RingSize) {
		return fmt.Errorf("set backends of vip %v: %w: %d backends up, more than the %d ring slots", v, ErrInvalid, up, l.opts.RingSize)
	}
	if added > l.realIDs.free() {
		return fmt.Errorf("set backends of vip %v: %w: at most %d backends in all", v, ErrFull, l.opts.MaxBackends)
	}

	// Build the new set beside the old one: if anything fails before the
	// ring is swapped, the VIP keeps its old backends and ring.
	next := make(map[netip.Addr]*realState, len(want))
	var fresh []*realState
	undo := func() {
		for _, r := range fresh {
			_ = l.releaseReal(r)
		}
	}
	for a, b := range want {
		var r realState
		old, ok := s.backends[a]
		if ok {
			r = *old
		} else {
			id, _ := l.realIDs.get()
			l.gen++
			r = realState{id: id, gen: l.gen}
			fresh = append(fresh, &r)
			zero := make([]lbLbTraffic, possibleCPUs())
			if err := l.objs.RealStats.Put(id, zero); err != nil {
				undo()
				return fmt.Errorf("set backends of vip %v: reset counters: %w", v, err)
			}
		}
		r.backend = b
		// A backend coming up is written before the ring names it; one
		// going down is retired after the ring stops naming it.
		if !b.Down && (!ok || old.backend.Down) {
			if err := l.writeReal(&r); err != nil {
				undo()
				return fmt.Errorf("set backends of vip %v: %w", v, err)
			}
		}
		next[a] = &r
	}
	if err := l.publishRing(s.id, next); err != nil {
		undo()
		return fmt.Errorf("set backends of vip %v: %w", v, err)
	}
	retired := s.backends
	s.backends = next
	for _, r := range next {
		if r.backend.Down {
			if err := l.writeReal(r); err != nil {
				return fmt.Errorf("set backends of vip %v: %w", v, err)
			}
		}
	}
	for a, r := range retired {
		if _, kept := next[a]; kept {
			continue
		}
		if err := l.releaseReal(r); err != nil {
			return fmt.Errorf("set backends of vip %v: %w", v, err)
		}
	}
	return nil
}

// publishRing builds the Maglev table of the VIP's up backends in a new
// inner map and swaps it in. With no backend up the ring is removed and
// the VIP's packets are dropped as drop_no_backend.
func (l *LB) publishRing(vipID uint32, backends map[netip.Addr]*realState) error {
	var up []maglev.Backend
	ids := make(map[netip.Addr]uint32)
	for a, r := range backends {
		if !r.backend.Down {
			up = append(up, maglev.Backend{Addr: a, Weight: r.backend.Weight})
			ids[a] = r.id
		}
	}
	if len(up) == 0 {
		if err := l.objs.Rings.Delete(vipID); err != nil && !isNotExist(err) {
			return fmt.Errorf("remove ring: %w", err)
		}
		return nil
	}
	table, err := maglev.New(up, l.opts.RingSize, l.cfg.Seed)
	if err != nil {
		return fmt.Errorf("build maglev table: %w", err)
	}
	members := table.Backends()
	slots := table.Slots()
	values := make([]uint32, len(slots))
	for i, m := range slots {
		values[i] = ids[members[m].Addr]
	}
	ring, err := ebpf.NewMap(l.ringSpec)
	if err != nil {
		return fmt.Errorf("create ring: %w", err)
	}
	defer ring.Close()
	keys := make([]uint32, len(values))
	for i := range keys {
		keys[i] = uint32(i)
	}
	if _, err := ring.BatchUpdate(keys, values, nil); err != nil {
		return fmt.Errorf("fill ring: %w", err)
	}
	if err := l.objs.Rings.Put(vipID, ring); err != nil {
		return fmt.Errorf("swap ring: %w", err)
	}
	return nil
}

func (l *LB) writeReal(r *realState) error {
	d := lbRealDef{Addr: bpfenc.AddrWords(r.backend.Addr), Gen: r.gen, Family: familyOf(r.backend.Addr)}
	if !r.backend.Down {
		d.Flags = realFlagUp
	}
	if err := l.objs.Reals.Put(r.id, &d); err != nil {
		return fmt.Errorf("write backend %v: %w", r.backend.Addr, err)
	}
	return nil
}

func (l *LB) releaseReal(r *realState) error {
	if err := l.objs.Reals.Put(r.id, &lbRealDef{}); err != nil {
		return fmt.Errorf("retire backend %v: %w", r.backend.Addr, err)
	}
	l.realIDs.put(r.id)
	return nil
}

func vipKey(v VIP) *lbVipKey {
	return &lbVipKey{Addr: bpfenc.AddrWords(v.Addr), Port: bpfenc.Htons(v.Port), Proto: uint8(v.Proto), Family: familyOf(v.Addr)}
}

func familyOf(a netip.Addr) uint8 {
	if a.Is4() {
		return familyV4
	}
	return familyV6
}

// idPool hands out small integer ids, lowest first.
type idPool struct {
	ids []uint32
}

func newIDPool(from, to uint32) idPool {
	p := idPool{ids: make([]uint32, 0, to-from)}
	for id := to; id > from; id-- {
		p.ids = append(p.ids, id-1)
	}
	return p
}

func (p *idPool) get() (uint32, bool) {
	if len(p.ids) == 0 {
		return 0, false
	}
	id := p.ids[len(p.ids)-1]
	p.ids = p.ids[:len(p.ids)-1]
	return id, true
}

func (p *idPool) put(id uint32) { p.ids = append(p.ids, id) }

func (p *idPool) free() int { return len(p.ids) }
