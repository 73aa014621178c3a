package lb

import (
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/sluice-dp/sluice/dataplane/internal/bpfenc"
)

// Traffic is a packet and byte count. Bytes count IP packets as received,
// before encapsulation.
type Traffic struct {
	Packets uint64
	Bytes   uint64
}

// Counters are the program's counters summed over CPUs.
type Counters struct {
	// Stats maps each counter of the C enum lb_stat, named in lower case
	// without its LB_STAT_ prefix ("tx", "conn_hit", "drop_truncated"), to
	// its total. The verdict counters pass, tx and drop count every packet
	// once; each drop also counts exactly one drop_* reason.
	Stats map[string]uint64
	// VIPs and Backends are the traffic balanced per VIP and per (VIP,
	// backend) pair.
	VIPs     map[VIP]Traffic
	Backends map[VIP]map[netip.Addr]Traffic
}

// Counters reads every counter.
func (l *LB) Counters() (Counters, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	stats, err := bpfenc.ReadStats(l.objs.Stats, l.names)
	if err != nil {
		return Counters{}, err
	}
	c := Counters{
		Stats:    stats,
		VIPs:     make(map[VIP]Traffic, len(l.vips)),
		Backends: make(map[VIP]map[netip.Addr]Traffic, len(l.vips)),
	}
	for v, s := range l.vips {
		t, err := sumTraffic(l.objs.VipStats, s.id)
		if err != nil {
			return Counters{}, fmt.Errorf("read counters of vip %v: %w", v, err)
		}
		c.VIPs[v] = t
		c.Backends[v] = make(map[netip.Addr]Traffic, len(s.backends))
		for a, r := range s.backends {
			t, err := sumTraffic(l.objs.RealStats, r.id)
			if err != nil {
				return Counters{}, fmt.Errorf("read counters of vip %v backend %v: %w", v, a, err)
			}
			c.Backends[v][a] = t
		}
	}
	return c, nil
}

func sumTraffic(m *ebpf.Map, id uint32) (Traffic, error) {
	var per []lbLbTraffic
	if err := m.Lookup(id, &per); err != nil {
		return Traffic{}, err
	}
	var t Traffic
	for _, v := range per {
		t.Packets += v.Packets
		t.Bytes += v.Bytes
	}
	return t, nil
}
