package scenario

import (
	"fmt"
	"net/netip"

	"github.com/sluice-dp/sluice/ctl/flowhash"
	"github.com/sluice-dp/sluice/ctl/maglev"
	"github.com/sluice-dp/sluice/dataplane/lb"
)

// This file is the engine's independent model of the load balancer's
// choices, from the wire format of docs/lb.md: the flow hash from
// ctl/flowhash and the ring from ctl/maglev, never from the program's output.

// flowKey identifies a client flow by its 5-tuple; ICMP flows have port 0.
type flowKey struct {
	Proto    uint8
	Src, Dst netip.AddrPort
}

func (f flowKey) String() string {
	return fmt.Sprintf("%s %v -> %v", protoName(f.Proto), f.Src, f.Dst)
}

func protoName(p uint8) string {
	switch p {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 1:
		return "icmp"
	case 58:
		return "icmpv6"
	}
	return fmt.Sprintf("proto %d", p)
}

// flowHash is the program's hash of a flow: the 5-tuple, or only the
// source address for a source-hash VIP.
func flowHash(f flowKey, sourceHash bool, seed uint64) uint32 {
	if sourceHash {
		return flowhash.Source(f.Src.Addr(), seed)
	}
	return flowhash.Tuple(f.Src, f.Dst, seed)
}

// tupleHash is the 5-tuple hash whatever the VIP's options: the GUE
// source port and IPv6 flow label derive from it.
func tupleHash(f flowKey, seed uint64) uint32 { return flowHash(f, false, seed) }

// model predicts backends from the scenario's LB settings.
type model struct {
	spec   *LBSpec
	tables map[string]*maglev.Table
}

func newModel(s *LBSpec) *model { return &model{spec: s, tables: map[string]*maglev.Table{}} }

// vipOf finds the VIP a flow is addressed to: its exact port first, then
// port 0, as the program matches.
func (m *model) vipOf(f flowKey) (VIPSpec, bool) {
	for _, port := range []uint16{f.Dst.Port(), 0} {
		for _, v := range m.spec.VIPs {
			if v.VIP.Addr == f.Dst.Addr() && v.VIP.Port == port && uint8(v.VIP.Proto) == f.Proto {
				return v, true
			}
		}
	}
	return VIPSpec{}, false
}

// ring predicts the backend the ring gives a flow, with the VIP's backends
// as they were (bs).
func (m *model) ring(v VIPSpec, bs []lb.Backend, f flowKey) (netip.Addr, error) {
	var up []maglev.Backend
	key := ""
	for _, b := range bs {
		if !b.Down {
			up = append(up, maglev.Backend{Addr: b.Addr, Weight: b.Weight})
			key += fmt.Sprintf("%v/%d,", b.Addr, b.Weight)
		}
	}
	if len(up) == 0 {
		return netip.Addr{}, fmt.Errorf("vip %v has no backend up", v.VIP)
	}
	t := m.tables[key]
	if t == nil {
		size := m.spec.RingSize
		if size == 0 {
			size = maglev.DefaultSize
		}
		var err error
		if t, err = maglev.New(up, size, m.spec.Seed); err != nil {
			return netip.Addr{}, fmt.Errorf("model maglev table of %v: %w", v.VIP, err)
		}
		m.tables[key] = t
	}
	return t.Lookup(flowHash(f, v.Options.SourceHash, m.spec.Seed)).Addr, nil
}
