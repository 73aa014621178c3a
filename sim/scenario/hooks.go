package scenario

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
)

// testHooks let this package's tests watch and break runs from the inside;
// they are nil outside tests, which the package's own tests set and reset
// one at a time (they do not run in parallel).
var testHooks struct {
	// loaded receives, just before teardown, the BPF programs and maps
	// the run holds, so that a test can check they are gone afterwards.
	loaded func(bpfObjects)
	// built runs when the topology is complete, LB programs attached; an
	// error it returns fails the build.
	built func() error
	// step runs at the start of every step, e.g. to panic inside a run.
	step func(name string)
}

// bpfObjects are the IDs of BPF programs and maps, sorted.
type bpfObjects struct {
	Progs []ebpf.ProgramID
	Maps  []ebpf.MapID
}

// bpfObjects finds every BPF program the run has loaded or attached: the
// LB programs, loaded or not yet attached, the chains' roots and policing
// programs, the agents' TC programs, and every XDP program on an
// interface of the topology (the XDP_PASS programs of native mode among
// them); then every map those programs use and every map held inside a
// map-in-map of theirs (the LB's per-CPU connection tables and per-VIP
// rings). IDs that cannot be read are skipped: the result is what is
// there to check, and a caller checks it is not empty.
func (w *world) bpfObjects() (bpfObjects, error) {
	progs := map[ebpf.ProgramID]bool{}
	var errs []error
	for _, n := range w.lbs {
		if info, err := n.lb.Program().Info(); err == nil {
			if id, ok := info.ID(); ok {
				progs[id] = true
			}
		} else {
			errs = append(errs, err)
		}
	}
	for _, n := range w.chains {
		ps := []*ebpf.Program{n.chain.Program()}
		if n.rl != nil {
			ps = append(ps, n.rl.Program())
		}
		if n.cl != nil {
			ps = append(ps, n.cl.Program())
		}
		for _, prog := range ps {
			if info, err := prog.Info(); err == nil {
				if id, ok := info.ID(); ok {
					progs[id] = true
				}
			} else {
				errs = append(errs, err)
			}
		}
	}
	for _, n := range w.agents {
		for _, prog := range []*ebpf.Program{n.agent.Egress(), n.agent.Ingress()} {
			if info, err := prog.Info(); err == nil {
				if id, ok := info.ID(); ok {
					progs[id] = true
				}
			} else {
				errs = append(errs, err)
			}
		}
	}
	for i, e := range w.ends {
		err := w.nodes[i.Node].Do(func() error {
			l, err := netlink.LinkByName(e.Iface)
			if err != nil {
				return err
			}
			if x := l.Attrs().Xdp; x != nil && x.ProgId != 0 {
				progs[ebpf.ProgramID(x.ProgId)] = true
			}
			return nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("xdp program of %s: %w", i, err))
		}
	}
	mapIDs := map[ebpf.MapID]bool{}
	for id := range progs {
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		info, err := p.Info()
		p.Close()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ids, _ := info.MapIDs()
		for _, m := range ids {
			mapIDs[m] = true
			errs = append(errs, innerMaps(m, mapIDs))
		}
	}
	return bpfObjects{Progs: slices.Sorted(maps.Keys(progs)), Maps: slices.Sorted(maps.Keys(mapIDs))}, errors.Join(errs...)
}

// innerMaps adds the IDs of the maps held in map-in-map id.
func innerMaps(id ebpf.MapID, into map[ebpf.MapID]bool) error {
	m, err := ebpf.NewMapFromID(id)
	if err != nil {
		return err
	}
	defer m.Close()
	if t := m.Type(); t != ebpf.ArrayOfMaps && t != ebpf.HashOfMaps {
		return nil
	}
	// Read from user space, a map-in-map's value is the inner map's ID.
	key := make([]byte, m.KeySize())
	var inner uint32
	it := m.Iterate()
	for it.Next(&key, &inner) {
		if inner != 0 {
			into[ebpf.MapID(inner)] = true
		}
	}
	return it.Err()
}
